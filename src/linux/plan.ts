import type { OsRelease } from './checks/os-release.js';
import { type Command, packageManagers } from './package-managers/index.js';
import { type PackagePlan, planPackages } from './packages.js';
import { planRepository, type RepositoryPlan } from './repository.js';
import type { LinuxSettings } from './settings.js';

/**
 * The whole installation as data: the repository file and where it may live, the keys to trust,
 * the packages with their versions and holds, and the package-manager commands. A pure function
 * of (distribution, architecture, settings, what is installed); applying it is a separate step,
 * and printing it is a dry run.
 */
export interface InstallPlan {
  repository: RepositoryPlan;
  packages: PackagePlan;
  /** In order: refresh our repository, install what is missing, hold what must not move. */
  commands: Command[];
}

export function planInstall(
  os: OsRelease,
  architecture: string,
  settings: LinuxSettings,
  installed: ReadonlyMap<string, string>,
): InstallPlan | undefined {
  const repository = planRepository(os, architecture, settings);
  if (!repository) return undefined;
  const manager = packageManagers[repository.manager];
  const packages = planPackages(os, repository.manager, installed);
  const commands =
    packages.missing.length === 0
      ? []
      : [
          manager.refresh(repository.target),
          manager.install(packages.wanted, repository.target),
          ...packages.holds.map((name) => manager.hold(name)),
        ];
  return { repository, packages, commands };
}

/** The plan as lines for the log (and a dry run): what would be written, trusted and run. */
export function describePlan(plan: InstallPlan): string[] {
  const { repository, packages } = plan;
  const lines = [
    `package manager: ${repository.manager}`,
    `repository file: ${repository.target.file}`,
    ...repository.alternatives.map(
      (alternative, index) => `repository ${index === 0 ? 'at' : 'else at'}: ${alternative.url}`,
    ),
    `keys: ${repository.keys.urls.join(', ')} -> ${repository.keys.file}, trusted: ${repository.keys.trustedFingerprints.join(', ')}`,
    `packages: ${packages.wanted.map((spec) => (spec.version ? `${spec.name} ${spec.version}` : spec.name)).join(', ')}`,
    packages.missing.length === 0
      ? 'already installed: nothing to run'
      : `to install: ${packages.missing.map((spec) => spec.name).join(', ')}`,
    ...packages.holds.map((name) => `hold: ${name}`),
    ...plan.commands.map((command) => `run: ${command.argv.join(' ')}`),
  ];
  return lines;
}
