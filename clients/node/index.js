// A minimal client of rerank's gRPC API, loading the .proto files from the repository's protos/
// at run time (@grpc/proto-loader), calling with the API key in metadata and a deadline.
"use strict";

const path = require("node:path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const PROTOS = path.resolve(__dirname, "..", "..", "protos");
// google/api/annotations.proto and http.proto (googleapis, Apache-2.0), which rerank.proto
// imports; proto-loader ships google/protobuf itself.
const THIRD_PARTY = path.resolve(__dirname, "third_party");

function loadService(protosDir = PROTOS) {
  const definition = protoLoader.loadSync(path.join(protosDir, "rerank", "v1", "rerank.proto"), {
    includeDirs: [protosDir, THIRD_PARTY],
    keepCase: true, // field names as declared: relevance_score, top_n
    defaults: true,
    oneofs: true,
  });
  return grpc.loadPackageDefinition(definition).rerank.v1.RerankService;
}

class RerankClient {
  /**
   * @param {string} target host:port of the service, or Envoy's listener (native gRPC too)
   * @param {{apiKey?: string, timeoutMs?: number, protosDir?: string}} options
   */
  constructor(target, { apiKey = process.env.RERANK_API_KEY, timeoutMs = 30000, protosDir } = {}) {
    const Service = loadService(protosDir);
    this.stub = new Service(target, grpc.credentials.createInsecure());
    this.apiKey = apiKey;
    this.timeoutMs = timeoutMs;
  }

  metadata() {
    const metadata = new grpc.Metadata();
    if (this.apiKey) metadata.set("authorization", `Bearer ${this.apiKey}`);
    return metadata;
  }

  call(method, request) {
    const deadline = new Date(Date.now() + this.timeoutMs);
    return new Promise((resolve, reject) => {
      this.stub[method](request, this.metadata(), { deadline }, (error, reply) =>
        error ? reject(error) : resolve(reply),
      );
    });
  }

  /**
   * Ranks documents (strings) for query, best first: [{index, relevance_score}]. `instruction`
   * replaces the model's default instruction, for a model that reads one (an LLM reranker); a
   * model that takes none refuses it (INVALID_ARGUMENT).
   */
  async rerank(query, documents, { model = "", topN, normalize = false, instruction } = {}) {
    const request = {
      model,
      query,
      // google.protobuf.Value: proto-loader uses protobufjs's bundled struct.proto, whose field names are camelCase.
      documents: documents.map((text) => ({ stringValue: text })),
      return_documents: false,
      normalize,
    };
    if (topN !== undefined) request.top_n = topN;
    if (instruction !== undefined) request.instruction = instruction;
    const reply = await this.call("Rerank", request);
    return {
      model: reply.model,
      results: reply.results.map((r) => ({ index: r.index, relevance_score: r.relevance_score })),
      prompt_tokens: reply.usage.prompt_tokens,
    };
  }

  /** The served models: [{id, architecture, max_length}]. */
  async listModels() {
    const reply = await this.call("ListModels", {});
    return reply.data.map((m) => ({ id: m.id, architecture: m.architecture, max_length: m.max_length }));
  }

  close() {
    this.stub.close();
  }
}

module.exports = { RerankClient, loadService };
