#!/usr/bin/env node
// rerank-node TARGET models
// rerank-node TARGET rerank MODEL QUERY DOCUMENT... [--top-n N]
// Prints JSON; the key comes from $RERANK_API_KEY. Exit status 1 with "CODE: details" on error.
"use strict";

const grpc = require("@grpc/grpc-js");
const { RerankClient } = require("./index.js");

async function main(argv) {
  const [target, command, ...rest] = argv;
  const topAt = rest.indexOf("--top-n");
  const topN = topAt >= 0 ? Number(rest.splice(topAt, 2)[1]) : undefined;
  const client = new RerankClient(target);
  try {
    if (command === "models") return await client.listModels();
    if (command === "rerank") {
      const [model, query, ...documents] = rest;
      return await client.rerank(query, documents, { model, topN });
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
