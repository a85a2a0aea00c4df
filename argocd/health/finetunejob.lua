if unobserved(obj) then
  hs.status = "Progressing"
  hs.message = "Waiting for recops to observe the latest spec"
elseif is_true(obj, "Failed") then
  hs.status = "Degraded"
  hs.message = message_of(obj, "Failed", "Training failed")
elseif is_true(obj, "Suspended") then
  hs.status = "Suspended"
  hs.message = message_of(obj, "Suspended", "Suspended")
elseif is_true(obj, "Complete") then
  local gate = condition(obj, "GatePassed")
  if gate ~= nil and gate.status == "False" then
    hs.status = "Degraded"
    hs.message = message_of(obj, "GatePassed", "The model did not pass its gate")
  else
    hs.status = "Healthy"
    hs.message = message_of(obj, "Ready", "Model written and ready")
  end
else
  hs.status = "Progressing"
  hs.message = message_of(obj, "Ready", "Phase " .. tostring(obj.status.phase))
end
return hs
