import { createHash } from 'node:crypto';
import type { DryRunContext } from '../lifecycle/extension.js';
import { runChecks, type Step } from './checks/index.js';
import type { OsRelease } from './checks/os-release.js';
import { installedList, interruptedRunCommand, type PreparedRun, prepareRun } from './installer.js';
import { type Change, describeChange, readInstallation, readJournal } from './journal.js';
import { realMachine } from './machine.js';
import type { Command } from './package-managers/index.js';
import type { LinuxSettings } from './settings.js';
import { realLinuxSystem } from './system.js';

/**
 * `install --dry-run` / `enable --dry-run`: the checks and the preparation of `converge` (the same
 * code: plan, package database query, keys and repository fetched), stopped before the first
 * change, and printed.
 */
export async function dryRun(
  context: DryRunContext<LinuxSettings>,
  options: { identity: boolean },
): Promise<string[]> {
  const system = await realLinuxSystem(context);
  const checks = await runChecks(system, {
    log: context.log,
    signal: context.signal,
    identity: options.identity,
  });
  const machine = realMachine(context.processes, context.clock);
  const prepared = await prepareRun(
    {
      machine,
      os: checks.os,
      architecture: system.architecture,
      settings: context.settings,
      log: context.log,
      signal: context.signal,
      remainingMs: context.remainingMs,
    },
    readInstallation(context.state),
  );
  return describeRun(prepared, {
    os: checks.os,
    checks: checks.steps,
    journal: readJournal(context.state),
    interrupted:
      prepared.plan.packages.missing.length > 0
        ? await interruptedRunCommand(machine, prepared.manager)
        : undefined,
  });
}

/** A prepared run as the lines a dry run prints: what would be written, trusted and run. */
export function describeRun(
  prepared: PreparedRun,
  facts: {
    os: OsRelease;
    checks: readonly Step[];
    /** An earlier command's journal: what the real command undoes first. */
    journal: readonly Change[];
    /** The command finishing a package-manager run killed halfway, when there was one. */
    interrupted: Command | undefined;
  },
): string[] {
  const { plan, manager, write, commands } = prepared;
  const repositoryFile = plan.repository.target.file;
  const lines = [
    `Checks passed: ${facts.checks.map((step) => step.name).join(', ')}.`,
    `Distribution: ${facts.os.id} ${facts.os.versionId ?? ''}; package manager: ${manager.name}.`,
  ];
  if (facts.journal.length > 0) {
    lines.push(
      `An earlier command stopped halfway; the real command first undoes ${facts.journal.map(describeChange).join('; ')}.`,
    );
  }
  if (prepared.converged) {
    lines.push(
      `Nothing to do: ${repositoryFile} is in place and ${installedList(plan)} already installed${plan.packages.holds.length > 0 ? ' and held' : ''}.`,
    );
    return lines;
  }

  if (write) {
    const probed = plan.repository.alternatives.length > 1;
    lines.push(
      `Fetched: ${plan.repository.keys.urls.join(', ')}${probed ? `; probed ${plan.repository.alternatives.map((alternative) => `${alternative.url.replace(/\/?$/, '/')}repodata/repomd.xml`).join(', ')}` : ''}.`,
      `Would write ${repositoryFile} (from ${write.repositoryUrl}), exactly:`,
      `--- begin ${repositoryFile} ---`,
      ...write.repositoryContent.replace(/\n$/, '').split('\n'),
      `--- end ${repositoryFile} ---`,
      `Would write ${plan.repository.keys.file} (${plan.repository.keys.format === 'keyring' ? 'binary OpenPGP keyring' : 'ASCII-armored keys'}, ${write.keyContent.length} bytes, sha256 ${createHash('sha256').update(write.keyContent).digest('hex')}) with the trusted keys:`,
      ...write.keys.map((key) => `  ${key.fingerprint}`),
    );
    if (write.refusedFingerprints.length > 0) {
      lines.push(
        `Refused (offered by the repository, not trusted, not written): ${write.refusedFingerprints.join(', ')}.`,
      );
    }
  } else if (prepared.repository === 'foreign') {
    lines.push(
      `${repositoryFile} was not written by this extension: used as it is, never changed; nothing fetched.`,
    );
  } else {
    lines.push(
      `${repositoryFile} and ${plan.repository.keys.file} are already as planned; nothing fetched.`,
    );
  }

  lines.push(
    `Packages: ${installedList(plan)}${plan.packages.holds.length > 0 ? `, held (${plan.packages.holds.join(', ')})` : ''}; to install: ${plan.packages.missing.map((spec) => spec.name).join(', ') || 'none'}.`,
  );
  const toRun = [
    facts.interrupted,
    commands.importKeys,
    commands.refresh,
    commands.install,
    ...commands.holds.map((hold) => hold.command),
  ].filter((command): command is Command => command !== undefined);
  lines.push('Would run, in order:');
  for (const command of toRun) {
    const env = Object.entries(command.env ?? {}).map(([name, value]) => `${name}=${value}`);
    lines.push(`  ${command.argv.join(' ')}${env.length > 0 ? `   (with ${env.join(' ')})` : ''}`);
  }
  if (facts.interrupted) {
    lines.push(
      `  (${facts.interrupted.argv.join(' ')} because the package manager was interrupted halfway earlier.)`,
    );
  }
  return lines;
}
