-- wrk script for benches/serve.sh: rotate over the corpus tarball URLs.
-- Arguments (after `--`): a file of "<path> <etag>" lines, and a mode: "get" (plain GETs) or
-- "304" (revalidations: If-None-Match with the server's own ETag for that path).
local paths, etags, i, mode = {}, {}, 0, "get"

function init(args)
  for line in io.lines(args[1]) do
    local p, e = line:match("^(%S+) (%S+)$")
    if p then
      paths[#paths + 1] = p
      etags[#etags + 1] = e
    end
  end
  mode = args[2] or "get"
  -- Threads start at different places so they do not walk the list in step.
  i = math.random(#paths) - 1
end

function request()
  i = i % #paths + 1
  if mode == "304" then
    return wrk.format("GET", paths[i], { ["If-None-Match"] = etags[i] })
  end
  return wrk.format("GET", paths[i])
end
