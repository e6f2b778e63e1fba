-- The TEI face's routes' script (after common.lua): TEI's error bodies and statuses, the
-- transcoder's {"code", "message"} errors rewritten on the way out. A route whose JSON answer is
-- one field of the printed message names that field in its metadata ("unwrap", under this
-- filter's name): {"<field>": X} becomes X.

-- TEI's error shape and statuses: {"error", "error_type"}; validation is a 422, no texts at all
-- a 400 "empty", overloaded 429, unhealthy 503. The status must be set before the body is read
-- (Envoy ignores a :status changed after handle:body()), so whether the request had no texts is
-- noted on the way in.
TEI_ERRORS = {
  ["400"] = {"422", "validation"}, ["401"] = {"401", "unauthorized"}, ["404"] = {"422", "validation"},
  ["413"] = {"413", "validation"}, ["429"] = {"429", "overloaded"}, ["503"] = {"503", "unhealthy"},
}

function envoy_on_request(handle)
  drop_non_grpc_headers(handle:headers())
  if handle:metadata():get("unwrap") == nil then return end
  local body = handle:body()
  local text = body ~= nil and body:getBytes(0, body:length()) or ""
  local absent = string.find(text, '"texts"', 1, true) == nil and string.find(text, '"query"', 1, true) ~= nil
  local empty = absent or string.find(text, '"texts"%s*:%s*%[%s*%]') ~= nil
  handle:streamInfo():dynamicMetadata():set("rerank.tei", "empty", empty and "1" or "0")
end

function envoy_on_response(handle)
  record_and_strip(handle)
  local unwrap = handle:metadata():get("unwrap")
  local headers = handle:headers()
  if not is_json(headers) then return end
  local status = headers:get(":status")
  if status == "200" and unwrap == nil then return end
  local mapped = TEI_ERRORS[status] or {status, "backend"}
  local noted = handle:streamInfo():dynamicMetadata():get("rerank.tei")
  if status == "400" and noted ~= nil and noted["empty"] == "1" then
    mapped = {"400", "empty"}
  end
  if status ~= "200" then headers:replace(":status", mapped[1]) end
  local body = handle:body()
  if body == nil then return end
  local text = body:getBytes(0, body:length())
  if status == "200" then
    -- {"<field>": X} -> X: the transcoder prints the whole message.
    local inner = string.match(text, '^%s*{%s*"' .. unwrap .. '"%s*:%s*(.*)}%s*$')
    if inner ~= nil then body:setBytes(inner) end
    return
  end
  local message = bounded(json_string(text, "message") or "")
  body:setBytes('{"error":"' .. message .. '","error_type":"' .. mapped[2] .. '"}')
end
