#!/usr/bin/env node
// rerank-node TARGET models
// rerank-node TARGET rerank MODEL QUERY DOCUMENT... [--top-n N] [--instruction TEXT]
// Prints JSON; the key comes from $RERANK_API_KEY. Exit status 1 with "CODE: details" on error.
"use strict";

const grpc = require("@grpc/grpc-js");
const { RerankClient } = require("./index.js");

// The value after `name` in args, both taken out of args; undefined when name is absent.
function option(args, name) {
  const at = args.indexOf(name);
  return at >= 0 ? args.splice(at, 2)[1] : undefined;
}

async function main(argv) {
  const [target, command, ...rest] = argv;
  const top = option(rest, "--top-n");
  const topN = top !== undefined ? Number(top) : undefined;
  const instruction = option(rest, "--instruction");
  const client = new RerankClient(target);
  try {
    if (command === "models") return await client.listModels();
    if (command === "rerank") {
      const [model, query, ...documents] = rest;
      return await client.rerank(query, documents, { model, topN, instruction });
    }
    throw new Error(`unknown command ${command}: models | rerank`);
  } finally {
    client.close();
  }
}

main(process.argv.slice(2)).then(
  (out) => console.log(JSON.stringify(out)),
  (error) => {
    const code = error.code !== undefined ? grpc.status[error.code] : "ERROR";
    console.error(`${code}: ${error.details || error.message}`);
    process.exit(1);
  },
);
