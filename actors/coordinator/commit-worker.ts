/** The coordinator's commit writer thread (commit-writer.ts): writes the files of one step's commit per call. */
import { workerData } from 'node:worker_threads';
import { serveCompute } from '../../src/runtime/compute-worker.ts';
import { unpackCommit, writeCommit, type PackedCommit } from './commit-files.ts';

const { runDir, checkpointDir } = (workerData as { options: { runDir: string; checkpointDir: string } }).options;

await serveCompute(async () => ({
  info: { pid: process.pid },
  handlers: {
    commit: (args) => {
      writeCommit(runDir, checkpointDir, unpackCommit(args as PackedCommit));
      return null;
    },
  },
}));
