/**
 * A self-signed server certificate kept on disk, so clients that pin it keep working across restarts.
 * Regenerated when missing, unreadable, expiring within 7 days, or issued for other names.
 */
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { chmod, mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { generate } from 'selfsigned';

export const CERT_FILE_NAME = 'tls-cert.pem';
export const KEY_FILE_NAME = 'tls-key.pem';
const VALIDITY_DAYS = 365;
const RENEW_BEFORE_MS = 7 * 24 * 60 * 60 * 1000;
const DAY_MS = 24 * 60 * 60 * 1000;

export interface SelfSignedCertificate {
  certFile: string;
  keyFile: string;
  /** PEM */
  cert: string;
  /** PEM, PKCS#8 */
  key: string;
  /** false when an existing pair was reused */
  created: boolean;
}

export class TlsCertificateError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'TlsCertificateError';
  }
}

export async function loadOrCreateSelfSignedCertificate(
  dir: string,
  opts: { commonName: string; altNames: string[] },
): Promise<SelfSignedCertificate> {
  const certFile = path.join(dir, CERT_FILE_NAME);
  const keyFile = path.join(dir, KEY_FILE_NAME);

  const existing = await readExisting(certFile, keyFile);
  if (existing && isReusable(existing.cert, existing.key, opts)) {
    return { certFile, keyFile, cert: existing.cert, key: existing.key, created: false };
  }

  let pems: { cert: string; private: string };
  try {
    const notBeforeDate = new Date(Date.now() - 60_000); // tolerate small clock skew on clients
    pems = await generate([{ name: 'commonName', value: opts.commonName }], {
      keyType: 'ec',
      curve: 'P-256',
      algorithm: 'sha256',
      notBeforeDate,
      notAfterDate: new Date(notBeforeDate.getTime() + VALIDITY_DAYS * DAY_MS),
      extensions: [
        { name: 'basicConstraints', cA: false },
        { name: 'keyUsage', digitalSignature: true, keyEncipherment: true, critical: true },
        { name: 'extKeyUsage', serverAuth: true },
        { name: 'subjectAltName', altNames: sanEntries(opts.altNames) },
      ],
    });
  } catch (e) {
    throw new TlsCertificateError(`could not generate a self-signed certificate for ${opts.commonName}`, { cause: e });
  }

  try {
    await mkdir(dir, { recursive: true, mode: 0o700 });
    // Each file via rename, so neither is ever half-written; a crash between the two leaves a
    // mismatched pair, which the checkPrivateKey test on the next call regenerates.
    await writeAtomic(keyFile, pems.private, 0o600);
    await writeAtomic(certFile, pems.cert, 0o644);
  } catch (e) {
    throw new TlsCertificateError(`could not write the certificate to ${dir}`, { cause: e });
  }
  return { certFile, keyFile, cert: pems.cert, key: pems.private, created: true };
}

function sanEntries(altNames: string[]): Array<{ type: 2; value: string } | { type: 7; ip: string }> {
  return altNames.map((n) => (net.isIP(n) ? { type: 7 as const, ip: withoutDottedTail(n) } : { type: 2 as const, value: n }));
}

async function readExisting(certFile: string, keyFile: string): Promise<{ cert: string; key: string } | undefined> {
  try {
    const [cert, key] = await Promise.all([readFile(certFile, 'utf8'), readFile(keyFile, 'utf8')]);
    return { cert, key };
  } catch {
    return undefined;
  }
}

function isReusable(certPem: string, keyPem: string, opts: { commonName: string; altNames: string[] }): boolean {
  try {
    const cert = new X509Certificate(certPem);
    const now = Date.now();
    if (Date.parse(cert.validFrom) > now) return false;
    if (Date.parse(cert.validTo) - now < RENEW_BEFORE_MS) return false;
    if (!cert.checkPrivateKey(createPrivateKey(keyPem))) return false;
    if (!cert.subject.split('\n').includes(`CN=${opts.commonName}`)) return false;
    const san = new Set((cert.subjectAltName ?? '').split(',').map((s) => s.trim()));
    return opts.altNames.every((n) => san.has(net.isIP(n) ? `IP Address:${normalizeIp(n)}` : `DNS:${n}`));
  } catch {
    return false; // unparsable: regenerate
  }
}

// IPv4-mapped tails (::ffff:1.2.3.4) as two hex groups: selfsigned mis-encodes the dotted form.
function withoutDottedTail(ip: string): string {
  if (net.isIPv4(ip)) return ip;
  const v4 = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(ip);
  if (!v4) return ip;
  const [a, b, c, d] = v4.slice(1).map(Number) as [number, number, number, number];
  return `${ip.slice(0, v4.index)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
}

// Node prints IPv6 SAN entries expanded, uppercase, without leading zeros; compare in that form.
function normalizeIp(ip: string): string {
  if (net.isIPv4(ip)) return ip;
  const [head = '', rest] = withoutDottedTail(ip).split('::');
  const h = head ? head.split(':') : [];
  const t = rest ? rest.split(':') : [];
  const fill = rest !== undefined ? Array<string>(8 - h.length - t.length).fill('0') : [];
  return [...h, ...fill, ...t].map((g) => g.replace(/^0+(?=.)/, '').toUpperCase()).join(':');
}

async function writeAtomic(file: string, content: string, mode: number): Promise<void> {
  const tmp = `${file}.${process.pid}.tmp`;
  await writeFile(tmp, content, { mode });
  await chmod(tmp, mode); // the umask may have narrowed or the file pre-existed
  await rename(tmp, file);
}
