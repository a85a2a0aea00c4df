if unobserved(obj) then
  hs.status = "Progressing"
  hs.message = "Waiting for the first evaluation"
elseif is_true(obj, "MetricsUnavailable") then
  hs.status = "Degraded"
  hs.message = message_of(obj, "MetricsUnavailable", "Metrics unavailable")
elseif is_true(obj, "Retraining") then
  hs.status = "Progressing"
  hs.message = message_of(obj, "Retraining", "Retraining")
elseif condition(obj, "Healthy") ~= nil and not is_true(obj, "Healthy") then
  hs.status = "Degraded"
  hs.message = message_of(obj, "Healthy", "A rule is breached")
elseif is_true(obj, "Ready") then
  hs.status = "Healthy"
  hs.message = message_of(obj, "Healthy", "All rules within their thresholds")
else
  hs.status = "Progressing"
  hs.message = message_of(obj, "Ready", "Evaluating")
end
return hs
