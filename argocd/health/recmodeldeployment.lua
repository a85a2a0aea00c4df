if unobserved(obj) then
  hs.status = "Progressing"
  hs.message = "Waiting for recops to observe the latest spec"
elseif is_true(obj, "Degraded") then
  hs.status = "Degraded"
  hs.message = message_of(obj, "Degraded", "A canary was rolled back")
elseif is_true(obj, "Progressing") then
  hs.status = "Progressing"
  hs.message = message_of(obj, "Progressing", "Rolling out")
elseif is_true(obj, "Available") and is_true(obj, "Ready") then
  hs.status = "Healthy"
  hs.message = message_of(obj, "Ready", "Serving")
elseif condition(obj, "Available") ~= nil and not is_true(obj, "Available") and obj.status.stable ~= nil then
  hs.status = "Degraded"
  hs.message = message_of(obj, "Available", "No ready replica")
else
  hs.status = "Progressing"
  hs.message = message_of(obj, "Ready", "Waiting for a model")
end
return hs
