/**
 * JetStream object store bucket for large artefacts (model weights, side-network checkpoints):
 * put and get whole byte arrays by name. The server must run with JetStream enabled.
 */
import type { NatsConnection, ObjectStore } from 'nats';
import { checkToken } from './subjects.ts';
import { BusFailure } from './errors.ts';

export interface StoredObject { name: string; size: number; digest: string }

export class ObjectStoreBucket {
  private constructor(private readonly os: ObjectStore, readonly bucket: string) {}

  /** Opens or creates `bucket`. @throws BusFailure naming the bucket when JetStream is unavailable. */
  static async open(nc: NatsConnection, bucket: string): Promise<ObjectStoreBucket> {
    checkToken('bucket', bucket);
    try {
      return new ObjectStoreBucket(await nc.jetstream().views.os(bucket), bucket);
    } catch (err) {
      throw new BusFailure(`cannot open object store bucket '${bucket}' (is JetStream enabled on the server?): ${(err as Error).message}`, false, { cause: err });
    }
  }

  /** Stores `bytes` under `name`, replacing any previous object of that name. */
  async put(name: string, bytes: Uint8Array): Promise<StoredObject> {
    try {
      const info = await this.os.putBlob({ name }, bytes);
      return { name: info.name, size: info.size, digest: info.digest };
    } catch (err) {
      throw new BusFailure(`object store '${this.bucket}': put '${name}' failed: ${(err as Error).message}`, true, { cause: err });
    }
  }

  /** The bytes stored under `name` (digest verified by the client), or null when absent. */
  async get(name: string): Promise<Uint8Array | null> {
    try {
      return await this.os.getBlob(name);
    } catch (err) {
      throw new BusFailure(`object store '${this.bucket}': get '${name}' failed: ${(err as Error).message}`, true, { cause: err });
    }
  }

  async info(name: string): Promise<StoredObject | null> {
    const info = await this.os.info(name);
    return info && !info.deleted ? { name: info.name, size: info.size, digest: info.digest } : null;
  }

  async list(): Promise<StoredObject[]> {
    return (await this.os.list()).filter((i) => !i.deleted).map((i) => ({ name: i.name, size: i.size, digest: i.digest }));
  }

  async delete(name: string): Promise<void> {
    await this.os.delete(name);
  }
}
