-- What every route's response script starts with (the default script and TEI's): this file,
-- then the route's own. Envoy runs it after the transcoder on the way back.
--
-- record_and_strip(handle): the call's gRPC status goes into the request's dynamic metadata for
-- the access log, and JSON responses lose the gRPC headers the transcoder leaves on them. A JSON
-- error's gRPC status comes from its HTTP status by HTTP_TO_GRPC (the inverse of the
-- transcoder's table, exact for every code the service sends).
-- bound_error(handle): a JSON error body over MAX_ECHO bytes gets its message cut to MAX_ECHO
-- bytes (the transcoder's errors quote what the client sent: its path, a field's value).
-- drop_non_grpc_headers(headers): request headers the service's gRPC library would fail on.
-- json_string(text, key), cut(raw, limit), bounded(raw): a JSON string's raw value, and that
-- value cut short (to limit, or MAX_ECHO bytes).
--
-- Constants: the renderer (gateway/envoy_config/filters.py) sets each line between BEGIN and END
-- to its configured value; the values here are examples, so that the file runs and lints as is.
--   HTTP_TO_GRPC  HTTP status -> gRPC code, both as strings (Envoy's local replies use the same)
--   MAX_ECHO      the most bytes of an error message an error body carries past its limit
-- BEGIN CONSTANTS
local HTTP_TO_GRPC = {["400"] = "3"}
local MAX_ECHO = 1024
-- END CONSTANTS

local CUT_MARK = "... (cut)"

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

-- The raw (still JSON-escaped) string value of the first "key":"..." in text, or nil.
function json_string(text, key)
  local pattern = '"' .. key .. '":"'
  local start = string.find(text, pattern, 1, true)
  if start == nil then return nil end
  local i = start + #pattern
  local j = i
  while j <= #text do
    local c = string.sub(text, j, j)
    if c == "\\" then
      j = j + 2
    elseif c == '"' then
      return string.sub(text, i, j - 1)
    else
      j = j + 1
    end
  end
  return nil
end

-- The raw JSON string value raw, cut to at most limit bytes (and CUT_MARK): never inside an
-- escape sequence or a UTF-8 character, so the result is still a valid JSON string value.
function cut(raw, limit)
  if #raw <= limit then return raw end
  local i = 1
  while i <= limit do
    if string.sub(raw, i, i) == "\\" then
      local step = string.sub(raw, i + 1, i + 1) == "u" and 6 or 2
      if i + step - 1 > limit then break end
      i = i + step
    else
      i = i + 1
    end
  end
  while i > 1 and i <= #raw do
    local byte = string.byte(raw, i)
    if byte < 128 or byte >= 192 then break end
    i = i - 1
  end
  return string.sub(raw, 1, i - 1) .. CUT_MARK
end

-- A message's raw JSON value, cut to MAX_ECHO bytes.
function bounded(raw)
  return cut(raw, MAX_ECHO)
end

-- A JSON error body over MAX_ECHO bytes: its message cut to MAX_ECHO bytes. Reads the body:
-- objects got from handle before are no longer valid after it.
function bound_error(handle)
  local status = tonumber(handle:headers():get(":status") or "") or 0
  if status < 400 or not is_json(handle:headers()) then return end
  local body = handle:body()
  if body == nil or body:length() <= MAX_ECHO then return end
  local text = body:getBytes(0, body:length())
  local raw = json_string(text, "message")
  if raw == nil then return end
  local _, last = string.find(text, '"message":"', 1, true)
  body:setBytes(string.sub(text, 1, last) .. bounded(raw) .. string.sub(text, last + #raw + 1))
end
