/**
 * Synthetic secrets for the masking tests: the right shapes, none of them real (PEM bodies and
 * signatures are hashes of fixed strings).
 */
import { createHash } from 'node:crypto';

/** Deterministic base64 of `bytes` bytes. */
function pseudoBase64(seed: string, bytes: number): string {
  let buf = Buffer.alloc(0);
  for (let i = 0; buf.length < bytes; i++) buf = Buffer.concat([buf, createHash('sha512').update(`${seed}/${i}`).digest()]);
  return buf.subarray(0, bytes).toString('base64');
}

function pem(kind: string, seed: string, bytes = 600): string {
  const body = pseudoBase64(seed, bytes).replace(/.{64}/g, '$&\n').trimEnd();
  return `-----BEGIN ${kind}-----\n${body}\n-----END ${kind}-----`;
}

const b64url = (v: string | object): string => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url');
const sig = (seed: string, bytes: number): string => Buffer.from(pseudoBase64(seed, bytes), 'base64').toString('base64url');

export const fixtures = {
  pemRsa: pem('RSA PRIVATE KEY', 'rsa'),
  pemEc: pem('EC PRIVATE KEY', 'ec', 120),
  pemOpenssh: pem('OPENSSH PRIVATE KEY', 'openssh', 300),
  pemPkcs8: pem('PRIVATE KEY', 'pkcs8'),
  pemEncrypted: pem('ENCRYPTED PRIVATE KEY', 'encrypted'),
  pemDsa: pem('DSA PRIVATE KEY', 'dsa', 400),
  pemPgp: pem('PGP PRIVATE KEY BLOCK', 'pgp', 900),
  jwtHs256: `${b64url({ alg: 'HS256', typ: 'JWT' })}.${b64url({ sub: '1234567890', name: 'John Doe', iat: 1516239022 })}.${sig('hs256', 32)}`,
  jwtNone: `${b64url({ alg: 'none' })}.${b64url({ sub: '1' })}.`,
  jwe: [b64url({ alg: 'RSA-OAEP', enc: 'A256GCM' }), sig('cek', 256), sig('iv', 12), sig('ct', 64), sig('tag', 16)].join('.'),
  githubPat: 'ghp_' + 'Zq8WvT2nLk5Rb9Xc3Mf6Hp1Jd4Gs7Ay0Ue8N',
  githubFineGrained: 'github_pat_' + '11ABCDEFG0' + 'Zq8WvT2nLk5Rb9Xc3Mf6Hp1Jd4Gs7Ay0Ue8Ni2_Zq8WvT2nLk5Rb9Xc3Mf6Hp1Jd4Gs7Ay0Ue8Ni2xyzA',
  stripeLive: 'sk_live_' + 'Zq8WvT2nLk5Rb9Xc3Mf6Hp1Jd4Gs7',
  googleKey: 'AIza' + 'SyZq8WvT2nLk5Rb9Xc3Mf6Hp1Jd4Gs7Ay0U',
} as const;
