import crypto from 'node:crypto';

// The pod identity of appc's metadata service (spec/ace.md, "Identity
// Endpoint"): HMAC-SHA512 over the pod's UUID (its 16 bytes) and the content,
// under a key that exists only in the service's memory. A pod can sign only
// as itself (the service takes its UUID from its token); anyone with the
// service's address can check a signature against a UUID.

const KEY_BYTES = 64;
const SIGNATURE_BYTES = 64;
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

export class PodIdentity {
  private readonly key = crypto.randomBytes(KEY_BYTES);

  private mac(uuid: string, content: string): Buffer {
    const h = crypto.createHmac('sha512', this.key);
    h.update(Buffer.from(uuid.replace(/-/g, ''), 'hex'));
    h.update(content, 'utf8');
    return h.digest();
  }

  /** Base64 (standard alphabet, padded) of the pod's signature of `content`. */
  sign(uuid: string, content: string): string {
    return this.mac(uuid, content).toString('base64');
  }

  /** undefined when `signature` is not base64 at all; else whether it is the pod's signature of `content`. */
  verify(uuid: string, content: string, signature: string): boolean | undefined {
    if (!BASE64.test(signature) || signature.length % 4 !== 0) return undefined;
    const given = Buffer.from(signature, 'base64');
    if (given.length !== SIGNATURE_BYTES) return false;
    return crypto.timingSafeEqual(given, this.mac(uuid, content));
  }
}
