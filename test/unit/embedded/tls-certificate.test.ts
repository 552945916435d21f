import assert from 'node:assert/strict';
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { generate } from 'selfsigned';
import {
  CERT_FILE_NAME,
  KEY_FILE_NAME,
  loadOrCreateSelfSignedCertificate,
} from '../../../proxy-task/src/embedded/tls-certificate.ts';

const dirs: string[] = [];
async function tempDir(): Promise<string> {
  const d = await mkdtemp(path.join(os.tmpdir(), 'warden-tls-test-'));
  dirs.push(d);
  return d;
}
after(() => Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true }))));

const names = { commonName: 'localhost', altNames: ['localhost', '127.0.0.1', '::1'] };

describe('loadOrCreateSelfSignedCertificate', () => {
  test('creates a pair once, then reuses it', async () => {
    const dir = path.join(await tempDir(), 'nested', 'tls');
    const first = await loadOrCreateSelfSignedCertificate(dir, names);
    assert.equal(first.created, true);
    assert.equal(first.certFile, path.join(dir, CERT_FILE_NAME));
    assert.equal(first.keyFile, path.join(dir, KEY_FILE_NAME));
    assert.equal(await readFile(first.certFile, 'utf8'), first.cert);

    const second = await loadOrCreateSelfSignedCertificate(dir, names);
    assert.equal(second.created, false);
    assert.equal(second.cert, first.cert);
    assert.equal(second.key, first.key);
  });

  test('writes the key with mode 0600', async () => {
    const { keyFile } = await loadOrCreateSelfSignedCertificate(await tempDir(), names);
    assert.equal((await stat(keyFile)).mode & 0o777, 0o600);
  });

  test('puts DNS and IP entries in the SAN and is valid for about a year', async () => {
    const { cert, key } = await loadOrCreateSelfSignedCertificate(await tempDir(), names);
    const x509 = new X509Certificate(cert);
    const san = x509.subjectAltName ?? '';
    assert.match(san, /DNS:localhost/);
    assert.match(san, /IP Address:127\.0\.0\.1/);
    assert.match(san, /IP Address:0:0:0:0:0:0:0:1/);
    assert.match(x509.subject, /CN=localhost/);
    const days = (Date.parse(x509.validTo) - Date.now()) / 86_400_000;
    assert.ok(days > 360 && days <= 366, `valid for ${days} days`);
    assert.ok(x509.checkPrivateKey(createPrivateKey(key)));
  });

  test('regenerates a certificate that expires within 7 days', async () => {
    const dir = await tempDir();
    const soon = await generate([{ name: 'commonName', value: 'localhost' }], {
      keyType: 'ec',
      algorithm: 'sha256',
      notBeforeDate: new Date(Date.now() - 86_400_000),
      notAfterDate: new Date(Date.now() + 3 * 86_400_000),
      extensions: [{ name: 'subjectAltName', altNames: [{ type: 2, value: 'localhost' }, { type: 7, ip: '127.0.0.1' }, { type: 7, ip: '::1' }] }],
    });
    await writeFile(path.join(dir, CERT_FILE_NAME), soon.cert);
    await writeFile(path.join(dir, KEY_FILE_NAME), soon.private, { mode: 0o600 });
    const result = await loadOrCreateSelfSignedCertificate(dir, names);
    assert.equal(result.created, true);
    assert.notEqual(result.cert, soon.cert);
  });

  test('regenerates when the requested names change', async () => {
    const dir = await tempDir();
    const first = await loadOrCreateSelfSignedCertificate(dir, names);
    const second = await loadOrCreateSelfSignedCertificate(dir, { ...names, altNames: [...names.altNames, 'warden.local'] });
    assert.equal(second.created, true);
    assert.notEqual(second.cert, first.cert);
    assert.match(new X509Certificate(second.cert).subjectAltName ?? '', /DNS:warden\.local/);
  });
});
