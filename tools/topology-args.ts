/** Topology files named on a command line: what is wrong with one is a one-line CliError naming file, line and field. */
import { CliError } from './args.ts';
import { loadTopology, TopologyError } from '../src/topology/load.ts';
import type { Topology } from '../src/topology/schema.ts';

/** Runs `read` (of a topology file, or of something in one); a TopologyError becomes a CliError of its first issue. */
export function readingTopology<T>(read: () => T): T {
  try {
    return read();
  } catch (err) {
    if (err instanceof TopologyError) throw new CliError(err.firstLine);
    throw err;
  }
}

/** The topology in `file`. @throws CliError for a file that does not load. */
export function topologyArg(file: string): Topology {
  return readingTopology(() => loadTopology(file));
}
