-- The early admission check (Envoy's Lua filter "rerank.admission", before the buffer filter).
--
-- A POST on a REST rerank path (PATHS) whose content-length is from MIN_BYTES to MAX_BYTES is
-- first put to a replica's "GET /admission?bytes=N" through that replica's cluster (CHECKS), in
-- turn, up to TRIES replicas. The first 200 admits it: its x-rerank-hold token (and, with several
-- replicas, the stateful-session value of the replica that holds the place: REPLICAS) goes on the
-- request. If every replica asked refuses, Envoy answers 429 with the shortest Retry-After and
-- that replica's JSON error, without reading the body; if none answered, the request goes on and
-- the service's own check decides. A client's own hold and replica headers are dropped.
--
-- Constants: the renderer (gateway/envoy_config/filters.py) sets each line between BEGIN and END
-- to its configured value; the values here are examples, so that the file runs and lints as is.
--   PATHS        set of REST paths checked (each with and without a trailing slash)
--   CHECKS       the admission clusters, one per replica's metrics port
--   MAX_TRIES    replicas asked about one body at most
--   REPLICAS     replica's metrics port -> its session-header value (empty with one replica)
--   MIN_BYTES    smallest body checked; MAX_BYTES: the largest (the buffer filter refuses more)
--   TIMEOUT_MS   how long a check may take (then the request goes on unchecked)
--   HOLD_HEADER, REPLICA_HEADER: the request headers the service reads
-- BEGIN CONSTANTS
local PATHS = {["/v1/rerank"] = true, ["/v1/rerank/"] = true}
local CHECKS = {"rerank_admission_0"}
local MAX_TRIES = 2
local REPLICAS = {}
local MIN_BYTES = 65536
local MAX_BYTES = 1048576
local TIMEOUT_MS = 250
local HOLD_HEADER = "x-rerank-hold"
local REPLICA_HEADER = "x-rerank-replica"
-- END CONSTANTS

local TRIES = math.min(MAX_TRIES, #CHECKS)
-- Which replica is asked first, in turn (per worker thread: Lua state is per worker).
local turn = 0

function envoy_on_response(handle)
  handle:headers():remove(REPLICA_HEADER)
end

-- What the check did, for the access log: admission (held, admitted, refused, or unchecked: no
-- replica answered, and the service's own check after the body decides alone) and
-- admission_checks (replicas asked). Fetched anew each time: objects from before an httpCall
-- are no longer valid after it.
local function note(handle, key, value)
  handle:streamInfo():dynamicMetadata():set("rerank", key, value)
end

function envoy_on_request(handle)
  local headers = handle:headers()
  -- The hold token and the replica are ours to set: never what a client sent.
  headers:remove(HOLD_HEADER)
  headers:remove(REPLICA_HEADER)
  if headers:get(":method") ~= "POST" then
    return
  end
  local path = string.match(headers:get(":path") or "", "^[^?]*")
  if not PATHS[path] then
    return
  end
  local size = tonumber(headers:get("content-length") or "")
  if size == nil or size < MIN_BYTES or size > MAX_BYTES then
    return
  end
  local authorization = headers:get("authorization")
  turn = turn % #CHECKS + 1
  local refusal, refusal_body, delay = nil, nil, nil
  for try = 0, TRIES - 1 do
    local cluster = CHECKS[(turn + try - 1) % #CHECKS + 1]
    local ok, reply, body = pcall(function()
      return handle:httpCall(cluster, {
        [":method"] = "GET",
        [":path"] = "/admission?bytes=" .. string.format("%d", size),
        [":authority"] = cluster,
        -- Only a caller with a valid key is refused early; the service answers the others (401).
        ["authorization"] = authorization,
      }, "", TIMEOUT_MS)
    end)
    note(handle, "admission_checks", string.format("%d", try + 1))
    local status = ok and reply ~= nil and reply[":status"] or nil
    if status == "200" then
      -- Admitted: the place the service holds for this body is taken by the call it becomes.
      if reply[HOLD_HEADER] ~= nil then
        note(handle, "admission", "held")
        -- headers from before the call are no longer valid: fetched anew.
        local request = handle:headers()
        request:replace(HOLD_HEADER, reply[HOLD_HEADER])
        local replica = REPLICAS[reply[REPLICA_HEADER] or ""]
        if replica ~= nil then
          request:replace(REPLICA_HEADER, replica)
        end
      else
        note(handle, "admission", "admitted")
      end
      return
    end
    if status == "429" and body ~= nil then
      -- Refused here: the next replica may have room. Of the refusals, the shortest delay.
      local seconds = tonumber(reply["retry-after"] or "1") or 1
      if refusal == nil or seconds < delay then
        refusal, refusal_body, delay = reply, body, seconds
      end
    end
  end
  if refusal == nil then
    note(handle, "admission", "unchecked")
    return
  end
  -- Envoy's own reply: the local-reply mapper keeps this body as it is (it keys on "refused").
  note(handle, "admission", "refused")
  note(handle, "grpc_status", "8")
  if refusal["x-rerank-key"] ~= nil then note(handle, "key", refusal["x-rerank-key"]) end
  handle:respond({
    [":status"] = "429",
    ["content-type"] = "application/json",
    ["retry-after"] = refusal["retry-after"] or "1",
    ["x-rerank-admission"] = "early",
  }, refusal_body)
end
