-- Shared by every recops health check (prepended when argocd-cm is generated).
-- Argo CD runs these with gopher-lua (Lua 5.1); `obj` is the live resource.
local function condition(o, ctype)
  if o.status == nil or o.status.conditions == nil then
    return nil
  end
  for _, c in ipairs(o.status.conditions) do
    if c.type == ctype then
      return c
    end
  end
  return nil
end

local function is_true(o, ctype)
  local c = condition(o, ctype)
  return c ~= nil and c.status == "True"
end

local function message_of(o, ctype, fallback)
  local c = condition(o, ctype)
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    return c.message
  end
  return fallback
end

-- recops has not yet acted on the latest spec: never report a stale verdict.
local function unobserved(o)
  if o.status == nil or o.status.observedGeneration == nil then
    return true
  end
  return o.metadata.generation ~= nil and o.status.observedGeneration < o.metadata.generation
end

local hs = {}
