-- What every route's response script starts with (the default script and TEI's): this file,
-- then the route's own. Envoy runs it after the transcoder on the way back.
--
-- record_and_strip(handle): the service's x-rerank-key (the caller's key name) and the call's
-- gRPC status go into the request's dynamic metadata for the access log; the key header leaves
-- the response, and JSON responses lose the gRPC headers the transcoder leaves on them. A JSON
-- error's gRPC status comes from its HTTP status by HTTP_TO_GRPC (the inverse of the
-- transcoder's table, exact for every code the service sends).
-- drop_non_grpc_headers(headers): request headers the service's gRPC library would fail on.
--
-- Constants: the renderer (gateway/envoy_config/filters.py) sets each line between BEGIN and END
-- to its configured value; the value here is an example, so that the file runs and lints as is.
--   HTTP_TO_GRPC  HTTP status -> gRPC code, both as strings (Envoy's local replies use the same)
-- BEGIN CONSTANTS
local HTTP_TO_GRPC = {["400"] = "3"}
-- END CONSTANTS

function is_json(headers)
  local ct = headers:get("content-type")
  return ct ~= nil and string.sub(string.lower(ct), 1, 16) == "application/json"
end

local function remember(handle, name, value)
  handle:streamInfo():dynamicMetadata():set("rerank", name, value)
end

-- Objects got from handle are valid until the script yields (bodyChunks): callers fetch the
-- headers anew after this.
function record_and_strip(handle)
  local headers = handle:headers()
  local key = headers:get("x-rerank-key")
  if key ~= nil then
    remember(handle, "key", key)
    headers:remove("x-rerank-key")
  end
  local status = headers:get("grpc-status")
  local ct = string.lower(headers:get("content-type") or "")
  if string.sub(ct, 1, 16) == "application/json" then
    headers:remove("grpc-status")
    headers:remove("grpc-message")
    headers:remove("grpc-accept-encoding")
    if status == nil then
      local http = headers:get(":status")
      status = http == "200" and "0" or HTTP_TO_GRPC[http] or "2"
    end
    remember(handle, "grpc_status", status)
  elseif string.sub(ct, 1, 16) == "application/grpc" then
    if status == nil then
      for _ in handle:bodyChunks() do end  -- passed on as they come; the status is in the trailers
      local trailers = handle:trailers()
      status = trailers and trailers:get("grpc-status")
    end
    if status ~= nil then
      remember(handle, "grpc_status", status)
    end
  end
end
-- Request headers become the service's gRPC metadata, whose keys are 0-9 a-z _ . - (Envoy has
-- lowercased them) and whose values, but for "-bin" keys, are printable ASCII. HTTP allows more
-- (a key "a|b", a Latin-1 value); the service's gRPC library fails the whole call for such a key
-- (a 500, "Illegal header key") and logs a traceback for such a value. They are dropped here,
-- and so are a REST request's grpc-* headers, which describe a gRPC message it does not send
-- ("grpc-encoding: snappy" failed the call with a 500; "grpc-timeout" would set its deadline;
-- gRPC-Web is transcoded as REST here), and any client's x-envoy-* headers, which would steer
-- Envoy itself (x-envoy-upstream-rq-timeout-ms: 1 was a 504).
function drop_non_grpc_headers(headers)
  local ct = headers:get("content-type") or ""
  local rest = not (ct == "application/grpc" or string.find(ct, "^application/grpc[+;]") ~= nil)
  local dropped = {}
  for key, value in pairs(headers) do
    if string.sub(key, 1, 1) ~= ":" and (string.find(key, "[^0-9a-z_%.%-]") ~= nil
        or (rest and string.sub(key, 1, 5) == "grpc-") or string.sub(key, 1, 8) == "x-envoy-"
        or (string.sub(key, -4) ~= "-bin" and string.find(value, "[^ -~]") ~= nil)) then
      dropped[#dropped + 1] = key
    end
  end
  for _, key in ipairs(dropped) do headers:remove(key) end
end
