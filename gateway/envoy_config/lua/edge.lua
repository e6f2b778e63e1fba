-- The edge's first filter (Envoy's Lua filter "rerank.edge"), before the edge's check (ext_authz).
--
-- On the way in: every request header starting with PREFIX is dropped (they are the edge's to
-- set: the check's token and the replica pin; a client's own would otherwise reach the service
-- whenever the check could not be asked), and a native gRPC request that did not come over
-- HTTP/2 is answered here, 400: gRPC needs HTTP/2, and sent on, the service's gRPC server would
-- reset it, which Envoy would retry and count against the replica's health. A REST request whose
-- Content-Length is over MAX_BODY is answered here too, 413, before the edge's check is asked: a
-- body over the limit that arrived while the check was pending stalled until the request timeout
-- (408) instead of the buffer filter's 413 (which still answers bodies sent without a length).
-- On the way out: REPLICA_HEADER leaves the response (Envoy's header-based session would tell
-- the client which replica served it).
--
-- Constants: the renderer (gateway/envoy_config/filters.py) sets each line between BEGIN and END
-- to its configured value; the values here are examples, so that the file runs and lints as is.
--   PREFIX          the prefix of the edge's own request headers
--   REPLICA_HEADER  the header of the replica pin
--   MAX_BODY        the body limit in bytes (RERANK_MAX_REQUEST_BYTES)
-- BEGIN CONSTANTS
local PREFIX = "x-rerank-"
local REPLICA_HEADER = "x-rerank-replica"
local MAX_BODY = 4194304
-- END CONSTANTS

local GRPC_NEEDS = "gRPC needs HTTP/2; this request came over "

function envoy_on_request(handle)
  local headers = handle:headers()
  local dropped = {}
  for key, _ in pairs(headers) do
    if string.sub(key, 1, #PREFIX) == PREFIX then
      dropped[#dropped + 1] = key
    end
  end
  for _, key in ipairs(dropped) do headers:remove(key) end
  local ct = string.lower(headers:get("content-type") or "")
  if ct == "application/grpc" or string.find(ct, "^application/grpc[+;]") ~= nil then
    local protocol = handle:streamInfo():protocol()
    if protocol ~= "HTTP/2" and protocol ~= "HTTP/3" then
      handle:respond({[":status"] = "400", ["grpc-status"] = "3"}, GRPC_NEEDS .. (protocol or "HTTP/1"))
    end
    return
  end
  local length = tonumber(headers:get("content-length") or "")
  if length ~= nil and length > MAX_BODY then
    handle:respond({[":status"] = "413"}, "Payload Too Large")
  end
end

function envoy_on_response(handle)
  handle:headers():remove(REPLICA_HEADER)
end
