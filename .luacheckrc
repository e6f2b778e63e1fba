-- luacheck's configuration for Envoy's Lua scripts (gateway/envoy_config/lua/), run by `make lint`.
-- Envoy runs LuaJIT (Lua 5.1) and calls the globals envoy_on_request / envoy_on_response.
std = "luajit"
max_line_length = 120
globals = {"envoy_on_request", "envoy_on_response"}

-- common.lua starts the default and TEI scripts (one chunk each): the functions it defines are
-- theirs to call.
local common = {"is_json", "record_and_strip", "drop_non_grpc_headers", "json_string", "cut", "bounded", "bound_error"}
files["gateway/envoy_config/lua/common.lua"] = {globals = common}
files["gateway/envoy_config/lua/default.lua"] = {read_globals = common, globals = {"top_level_value"}}
files["gateway/envoy_config/lua/tei.lua"] = {read_globals = common, globals = {"TEI_ERRORS"}}
