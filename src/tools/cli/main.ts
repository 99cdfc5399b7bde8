#!/usr/bin/env node
/** The `invad` command line: one command per file under commands/; exit codes in exit.ts. */
import { Command } from 'commander';
import { packageVersion } from '../../util/package-info';
import { backboneCommand } from './commands/backbone';
import { baselineCommand } from './commands/baseline';
import { benchCommand } from './commands/bench';
import { calibrateCommand } from './commands/calibrate';
import { doctorCommand } from './commands/doctor';
import { evalCommand } from './commands/eval';
import { exportCommand } from './commands/export';
import { fitCommand } from './commands/fit';
import { quantizeCommand } from './commands/quantize';
import { scoreCommand } from './commands/score';
import { serveCommand } from './commands/serve';
import { EXIT_CODES_HELP, EXIT_INTERNAL, exitFor } from './exit';

function forEachCommand(cmd: Command, fn: (c: Command) => void): void {
  fn(cmd);
  for (const sub of cmd.commands) forEachCommand(sub, fn);
}

/** The whole command tree; every command's help ends with the exit codes. */
export function buildProgram(): Command {
  const program = new Command('invad')
    .description('Reconstruction-free visual anomaly detection by DDIM inversion of backbone features')
    .version(packageVersion())
    .addCommand(scoreCommand())
    .addCommand(serveCommand())
    .addCommand(fitCommand())
    .addCommand(baselineCommand())
    .addCommand(calibrateCommand())
    .addCommand(evalCommand())
    .addCommand(backboneCommand())
    .addCommand(doctorCommand())
    .addCommand(benchCommand())
    .addCommand(exportCommand())
    .addCommand(quantizeCommand())
    .showHelpAfterError();
  forEachCommand(program, (c) => c.addHelpText('after', EXIT_CODES_HELP));
  return program;
}

/**
 * Runs the CLI on `argv` (as process.argv: node, script, args...) and returns the exit code
 * (exit.ts): commander's own exits become exceptions, so usage errors from the parser, from
 * option parsers and from the commands all end the same way.
 */
export async function runCli(argv: readonly string[]): Promise<number> {
  const program = buildProgram();
  let printed = false;
  forEachCommand(program, (c) => {
    c.exitOverride();
    c.configureOutput({
      outputError: (str, write) => {
        printed = true;
        write(str);
      },
    });
  });
  try {
    await program.parseAsync([...argv]);
    // Commands report "some input failed" by setting process.exitCode.
    return Number(process.exitCode ?? 0);
  } catch (err) {
    const { code, message } = exitFor(err, printed);
    process.stderr.write(message);
    return code;
  }
}

if (require.main === module) {
  // `invad score ... | head` closes stdout early; that is not an error.
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE') process.exit(0);
    throw err;
  });
  // Errors outside the command's promise chain are still bugs or setup errors, never Node's
  // default exit code 1, which means "some input failed".
  const fatal = (err: unknown) => {
    const { code, message } = exitFor(err, false);
    process.stderr.write(message);
    process.exit(code);
  };
  process.on('uncaughtException', fatal);
  process.on('unhandledRejection', fatal);
  runCli(process.argv).then(
    (code) => {
      process.exitCode = code;
    },
    (err: unknown) => {
      process.stderr.write(`invad: internal error (please report it): ${String(err)}\n`);
      process.exitCode = EXIT_INTERNAL;
    },
  );
}
