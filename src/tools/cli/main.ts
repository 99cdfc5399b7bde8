#!/usr/bin/env node
/** The `invad` command line: one command per file under commands/. */
import { Command } from 'commander';
import { InvadError } from '../../util/errors';
import { packageVersion } from '../../util/package-info';
import { backboneCommand } from './commands/backbone';
import { benchCommand } from './commands/bench';
import { calibrateCommand } from './commands/calibrate';
import { doctorCommand } from './commands/doctor';
import { evalCommand } from './commands/eval';
import { fitCommand } from './commands/fit';
import { scoreCommand } from './commands/score';

export function buildProgram(): Command {
  return new Command('invad')
    .description('Reconstruction-free visual anomaly detection by DDIM inversion of backbone features')
    .version(packageVersion())
    .addCommand(scoreCommand())
    .addCommand(fitCommand())
    .addCommand(calibrateCommand())
    .addCommand(evalCommand())
    .addCommand(backboneCommand())
    .addCommand(doctorCommand())
    .addCommand(benchCommand())
    .showHelpAfterError();
}

if (require.main === module) {
  // `invad score ... | head` closes stdout early; that is not an error.
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE') process.exit(0);
    throw err;
  });
  buildProgram()
    .parseAsync(process.argv)
    .catch((err: unknown) => {
      const code = err instanceof InvadError ? ` [${err.code}]` : '';
      process.stderr.write(`invad: ${(err as Error).message}${code}\n`);
      process.exitCode = 2;
    });
}
