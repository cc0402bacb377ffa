// A throwaway certificate authority and a server certificate for localhost / 127.0.0.1, made
// with the openssl CLI (no npm package needed), for the TLS tests.
import { execFileSync } from 'node:child_process';
import { createHash, createPublicKey } from 'node:crypto';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

function openssl(args) {
  try {
    execFileSync('openssl', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  } catch (e) {
    throw new Error(`openssl ${args[0]} failed (is the openssl CLI installed?): ${e.stderr || e.message}`);
  }
}

/**
 * Writes ca.pem, server.pem (the certificate) and server.key to a fresh temp directory.
 * Returns their paths and contents, and `spki`: the base64 SHA-256 of the server key's
 * SubjectPublicKeyInfo, the form Chromium's --ignore-certificate-errors-spki-list takes.
 */
export function makeTestCerts() {
  const dir = mkdtempSync(join(tmpdir(), 'crier-compat-tls-'));
  const p = (name) => join(dir, name);
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  openssl(['req', '-x509', ...ec, '-keyout', p('ca.key'), '-out', p('ca.pem'), '-days', '2',
    '-subj', '/CN=Crier compat test CA',
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign']);
  openssl(['req', ...ec, '-keyout', p('server.key'), '-out', p('server.csr'), '-subj', '/CN=localhost']);
  writeFileSync(p('ext.cnf'), 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n');
  openssl(['x509', '-req', '-in', p('server.csr'), '-CA', p('ca.pem'), '-CAkey', p('ca.key'), '-CAcreateserial',
    '-out', p('server.pem'), '-days', '2', '-extfile', p('ext.cnf')]);
  const key = readFileSync(p('server.key'));
  const spkiDer = createPublicKey(key).export({ type: 'spki', format: 'der' });
  return {
    dir,
    caPath: p('ca.pem'),
    certPath: p('server.pem'),
    keyPath: p('server.key'),
    ca: readFileSync(p('ca.pem')),
    cert: readFileSync(p('server.pem')),
    key,
    spki: createHash('sha256').update(spkiDer).digest('base64'),
  };
}
