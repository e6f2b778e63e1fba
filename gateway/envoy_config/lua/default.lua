-- The default route's script (after common.lua): records the response for the access log, and
-- refuses a request whose LIST_FIELDS field is not a JSON list (the transcoder would read a lone
-- string or object as a list of one) with a 400 that goes through the local-reply mappers.
--
-- Constants: the renderer (gateway/envoy_config/filters.py) sets each line between BEGIN and END
-- to its configured value; the value here is an example, so that the file runs and lints as is.
--   LIST_FIELDS  REST path -> the body's field that must be a list
-- BEGIN CONSTANTS
local LIST_FIELDS = {["/v1/rerank"] = "documents"}
-- END CONSTANTS

function envoy_on_response(handle)
  record_and_strip(handle)
  bound_error(handle)
end

-- The first character of the value of the top-level key `key` in the JSON object `text` (nil
-- when absent). Jumps from one structural character to the next with string.find, so a body of
-- megabytes is not walked character by character.
function top_level_value(text, key)
  local depth, i = 0, 1
  while true do
    local j = string.find(text, '[{}%[%]"]', i)
    if j == nil then return nil end
    local c = string.sub(text, j, j)
    if c == '"' then
      local k = j + 1
      while true do
        local q = string.find(text, '["\\]', k)
        if q == nil then return nil end
        if string.sub(text, q, q) == "\\" then k = q + 2 else k = q; break end
      end
      if depth == 1 and string.sub(text, j + 1, k - 1) == key then
        local at = string.match(text, "^%s*:%s*()", k + 1)
        if at ~= nil then return string.sub(text, at, at) end
      end
      i = k + 1
    else
      if c == "{" or c == "[" then depth = depth + 1 else depth = depth - 1 end
      i = j + 1
    end
  end
end

function envoy_on_request(handle)
  local headers = handle:headers()
  drop_non_grpc_headers(headers)
  if headers:get(":method") ~= "POST" then return end
  local path = string.gsub(string.match(headers:get(":path") or "", "^[^?]*"), "/$", "")
  local field = LIST_FIELDS[path]
  if field == nil then return end
  local body = handle:body()
  if body == nil then return end
  local first = top_level_value(body:getBytes(0, body:length()), field)
  if first ~= nil and first ~= "[" then
    local kinds = {['"'] = "a string", ["{"] = "an object", ["t"] = "a boolean", ["f"] = "a boolean", ["n"] = "null"}
    local kind = kinds[first] or "a number"
    handle:respond({[":status"] = "400"},
      field .. " is " .. kind .. '; it must be a list of strings or {"text": string} objects')
  end
end
