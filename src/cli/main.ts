#!/usr/bin/env node
/**
 * `etcdc`: the command-line face of etcd-connector. Exit codes: 0 ok, 1 error, 2 usage.
 */
import { readFileSync } from 'node:fs';
import { Command, CommanderError } from 'commander';
import { EtcdConnectorError, ErrorCode } from '../errors.js';
import { registerDemo } from './commands/demo.js';
import { registerElect, registerLeader } from './commands/election.js';
import { registerHealth } from './commands/health.js';
import { registerObserve } from './commands/observe.js';
import { registerRegister, registerServices } from './commands/services.js';
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

export function buildProgram(): Command {
  const program = new Command('etcdc')
    .description(
      'Leader election, service registration and tracking, observers and health on etcd v3',
    )
    .version(version())
    .showHelpAfterError('(add --help for usage)')
    .exitOverride();
  addGlobalFlags(program);
  registerElect(program);
  registerLeader(program);
  registerRegister(program);
  registerServices(program);
  registerObserve(program);
  registerHealth(program);
  registerDemo(program);
  for (const cmd of program.commands) cmd.exitOverride();
  return program;
}

async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv);
    return typeof process.exitCode === 'number' ? process.exitCode : EXIT_OK;
  } catch (err) {
    if (err instanceof CommanderError) {
      return err.exitCode === 0 ? EXIT_OK : EXIT_USAGE;
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
