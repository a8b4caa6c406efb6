// npm's own ssri (the copy bundled with npm) answering tests/ssri_differential.rs, in one process.
//
// argv[2]: `npm root -g`. stdin: JSON lines, `{"data": "<base64>"}` (a buffer, numbered from 0 in
// order) or `{"s": "<integrity>", "data": <index or null>, "ours": "<tarvault's printing>" or null}`.
// stdout: a first line naming ssri's path and version, then one JSON line per input line.
'use strict'
const path = require('path')

function findSsri (root) {
  const dirs = [path.join(root, 'npm'), path.join(path.dirname(process.execPath), '..', 'lib', 'node_modules', 'npm')]
  for (const dir of dirs) {
    try {
      return require.resolve('ssri', { paths: [dir] })
    } catch {}
  }
  throw new Error(`npm's ssri is not under ${dirs.join(' or ')}`)
}

const where = findSsri(process.argv[2] || '')
const ssri = require(where)
const version = require(path.join(path.dirname(where), '..', 'package.json')).version

// An Integrity as data: its hashes grouped as ssri keeps them, its printings and its pick.
function view (sri) {
  if (!sri) {
    return null
  }
  const hashes = []
  for (const algo of Object.keys(sri)) {
    for (const h of sri[algo]) {
      hashes.push([h.algorithm, h.digest, h.options])
    }
  }
  return { hashes, str: sri.toString(), strict_str: sri.toString({ strict: true }), pick: sri.pickAlgorithm() }
}

const buffers = []
const out = [JSON.stringify({ ssri: where, version })]
const input = require('fs').readFileSync(0, 'utf8')
for (const line of input.split('\n')) {
  if (!line) {
    continue
  }
  const msg = JSON.parse(line)
  if (!('s' in msg)) {
    const buf = Buffer.from(msg.data, 'base64')
    buffers.push(buf)
    const of = algo => ssri.fromData(buf, { algorithms: [algo] })
    out.push(JSON.stringify({
      sha512: of('sha512').toString(),
      sha384: of('sha384').toString(),
      sha256: of('sha256').toString(),
      sha1: of('sha1').toString(),
      md5: of('md5').toString(),
      shasum: of('sha1').hexDigest(),
      // Read back with fromHex, as pacote reads a packument's `shasum` without `integrity`.
      from_hex: ssri.fromHex(of('sha1').hexDigest(), 'sha1').toString(),
    }))
    continue
  }
  const s = msg.s
  // The tokens ssri's parse drops: split and trimmed exactly as ssri does.
  const dropped = s.trim().split(/\s+/).filter(t => t && !ssri.parse(t, { single: true }).algorithm)
  const res = { parse: view(ssri.parse(s)), strict: view(ssri.parse(s, { strict: true })), dropped }
  if (msg.data !== null && msg.data !== undefined) {
    const found = ssri.checkData(buffers[msg.data], s)
    res.check = found ? found.algorithm : ''
  }
  if (msg.ours !== null && msg.ours !== undefined) {
    res.ours = view(ssri.parse(msg.ours))
    res.ours_strict = view(ssri.parse(msg.ours, { strict: true }))
  }
  out.push(JSON.stringify(res))
}
process.stdout.write(out.join('\n') + '\n')
