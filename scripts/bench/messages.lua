-- wrk script: POST a Messages request. BENCH_KEY is the credential,
-- BENCH_STREAM "true" asks for SSE.
wrk.method = "POST"
wrk.headers["content-type"] = "application/json"
wrk.headers["anthropic-version"] = "2023-06-01"
wrk.headers["x-api-key"] = os.getenv("BENCH_KEY")
wrk.headers["user-agent"] = "claude-cli/2.1.332 (external, sdk-cli)"
wrk.body = '{"model":"claude-sonnet-4-5-20250929","max_tokens":64,"stream":'
  .. (os.getenv("BENCH_STREAM") or "false")
  .. ',"messages":[{"role":"user","content":"Say hi"}]}'

done = function(summary, latency, requests)
  io.write(string.format("RESULT rps=%.1f p50_us=%d p99_us=%d errors=%d\n",
    summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(99),
    summary.errors.status + summary.errors.connect + summary.errors.read
      + summary.errors.write + summary.errors.timeout))
end
