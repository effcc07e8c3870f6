#!/usr/bin/env node
/**
 * `etcdc`: the command-line face of etcd-connector. Exit codes: 0 ok, 1 error, 2 usage; `etcdc
 * lock` adds 3 (not acquired), 4 (lost while held) and passes on its command's code.
 */
import { readFileSync } from 'node:fs';
import { Command, CommanderError } from 'commander';
import { EtcdConnectorError, ErrorCode, InvalidArgumentError } from '../errors.js';
import { registerDashboard } from './commands/dashboard.js';
import { registerDemo } from './commands/demo.js';
import { registerElect, registerLeader } from './commands/election.js';
import { registerEndpoints } from './commands/endpoints.js';
import { registerHealth } from './commands/health.js';
import { registerLock } from './commands/lock.js';
import { registerInspect } from './commands/inspect.js';
import { registerObserve } from './commands/observe.js';
import { registerRegister, registerServices } from './commands/services.js';
import { registerBarrier, registerCounter, registerQueue } from './commands/toolbox.js';
import { addGlobalFlags } from './connect.js';
import { createOutput } from './output.js';

export const EXIT_OK = 0;
export const EXIT_ERROR = 1;
export const EXIT_USAGE = 2;

function version(): string {
  const pkg = JSON.parse(
    readFileSync(new URL('../../../package.json', import.meta.url), 'utf8'),
  ) as { version: string };
  return pkg.version;
}

/**
 * The whole CLI. With `json`, commander's own error text (usage errors) is not written: `main`
 * prints it as a JSON error line instead, so stderr stays one JSON object per line.
 */
export function buildProgram(json = false): Command {
  const program = new Command('etcdc')
    .description(
      'Leader election, locks, service registration and tracking (also as Go gRPC endpoints), ' +
        'observers, health, queues, counters and barriers on etcd v3',
    )
    .version(version())
    .showHelpAfterError(json ? false : '(add --help for usage)')
    .configureOutput({
      outputError: (text, write) => {
        if (!json) write(text);
      },
    })
    .exitOverride();
  addGlobalFlags(program);
  registerElect(program);
  registerLeader(program);
  registerLock(program);
  registerRegister(program);
  registerServices(program);
  registerEndpoints(program);
  registerObserve(program);
  registerHealth(program);
  registerQueue(program);
  registerCounter(program);
  registerBarrier(program);
  registerInspect(program);
  registerDashboard(program);
  registerDemo(program);
  for (const cmd of program.commands) cmd.exitOverride();
  return program;
}

async function main(argv: string[]): Promise<number> {
  // Known before parsing, for the errors of parsing itself.
  const args = argv.slice(2, argv.includes('--') ? argv.indexOf('--') : undefined);
  const jsonRequested = args.includes('--json');
  const program = buildProgram(jsonRequested);
  try {
    await program.parseAsync(argv);
    return typeof process.exitCode === 'number' ? process.exitCode : EXIT_OK;
  } catch (err) {
    if (err instanceof CommanderError) {
      if (err.exitCode === 0) return EXIT_OK;
      if (jsonRequested) {
        const message = err.message.replace(/^error: /, '');
        createOutput(true).error(new InvalidArgumentError('usage', message));
      }
      return EXIT_USAGE;
    }
    const json = program.opts<{ json?: boolean }>().json === true;
    createOutput(json).error(err);
    const usage = err instanceof EtcdConnectorError && err.code === ErrorCode.InvalidArgument;
    return usage ? EXIT_USAGE : EXIT_ERROR;
  }
}

const code = await main(process.argv);
process.exitCode = code;
// Everything is closed by now, so the process ends by itself; this unref'd timer only fires if a
// stray handle would keep it alive, and then exits anyway.
setTimeout(() => process.exit(code), 3000).unref();
