/** The shape of one benchmark case. */
import type { BenchEnv } from './env.js';
import type { Row } from './table.js';

/** One case: a name for `--case`, a title for the log, and a run that returns its table rows. */
export interface BenchCase {
  readonly name: string;
  readonly title: string;
  run(env: BenchEnv): Promise<Row[]>;
}
