// A worker thread does not inherit the parent's TypeScript loader: register it, then load the
// worker's real entry (a .ts module) given in workerData.
import { workerData } from 'node:worker_threads';
import { register } from 'tsx/esm/api';

register();
await import(workerData.entry);
