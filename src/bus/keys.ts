/**
 * NATS user keys (nkeys, ed25519) from the nats library: a new key pair for an identity, and the
 * authenticator a connection signs the server's challenge with. The seed never leaves the
 * process that holds it; the server only knows the public key.
 */
import { nkeyAuthenticator, nkeys, type Authenticator } from 'nats';

/** A new user key: `publicKey` (U...) goes into the server's config, `seed` (SU...) to its holder only. */
export function newUserKey(): { publicKey: string; seed: string } {
  const kp = nkeys.createUser() as { getPublicKey(): string; getSeed(): Uint8Array };
  return { publicKey: kp.getPublicKey(), seed: new TextDecoder().decode(kp.getSeed()) };
}

/** The public key of a seed. @throws Error when `seed` is not a user seed. */
export function publicKeyOf(seed: string): string {
  const kp = nkeys.fromSeed(new TextEncoder().encode(seed)) as { getPublicKey(): string };
  const key = kp.getPublicKey();
  if (!key.startsWith('U')) throw new Error('not a NATS user seed');
  return key;
}

export function seedAuthenticator(seed: string): Authenticator {
  return nkeyAuthenticator(new TextEncoder().encode(seed));
}
