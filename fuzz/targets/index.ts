/** The fuzz targets by name, loaded on demand: a child needs only its own target's modules. */
import type { FuzzTarget, TargetName } from '../protocol';

/* eslint-disable @typescript-eslint/no-require-imports */
const loaders: Record<TargetName, () => FuzzTarget<never>> = {
  addon: () => (require('./addon') as typeof import('./addon')).addonTarget as FuzzTarget<never>,
  score: () => (require('./score') as typeof import('./score')).scoreTarget as FuzzTarget<never>,
  bundle: () => (require('./bundle') as typeof import('./bundle')).bundleTarget as FuzzTarget<never>,
  cli: () => (require('./cli') as typeof import('./cli')).cliTarget as FuzzTarget<never>,
  selftest: () => (require('./selftest') as typeof import('./selftest')).selftestTarget as FuzzTarget<never>,
};

export function loadTarget(name: TargetName): FuzzTarget<never> {
  return loaders[name]();
}
