import { toFailure, withNotRun } from '../failures.js';
import type { Extension, OperationContext, Outcome } from '../lifecycle/extension.js';
import { CHECKS, runChecks, type Step } from './checks/index.js';
import { CONVERGE_STEPS, converge, queryPackages, removeInstallation } from './installer.js';
import { realMachine } from './machine.js';
import { DEFAULT_BASE_URL } from './repository.js';
import { type LinuxSettings, parseLinuxSettings } from './settings.js';
import { machineName, realLinuxSystem } from './system.js';

export const LINUX_HANDLER_NAME = 'Microsoft.Azure.ActiveDirectory.AADSSHLoginForLinux';

/**
 * AADSSHLoginForLinux. `install` and `enable` run the checks (operating system, memory,
 * AADLoginForLinux, managed identity) before anything changes, then converge the VM: the
 * repository, the packages and their registrations (a converged `enable` repeats only the cheap
 * checks and queries the package database). `update` only checks: it runs without the settings,
 * and the new version's `install` and `enable` that follow it do the work with them. `uninstall`
 * removes what the extension installed, and nothing else.
 */
export const aadSshLoginForLinux: Extension<LinuxSettings> = {
  handlerName: LINUX_HANDLER_NAME,
  logFileName: 'aadsshlogin-handler.log',
  parseSettings: parseLinuxSettings,
  run: {
    install: (context) => configureVm(context, 'all'),
    update: checkOnly,
    enable: (context) => configureVm(context, identityConfirmed(context) ? 'cheap' : 'all'),
    disable: async () => ({
      status: 'success',
      message: 'nothing to do: Entra ID login stays configured.',
    }),
    uninstall: async (context) => ({
      status: 'success',
      message: await removeInstallation({ ...jobBase(context) }),
    }),
  },
  // Loaded only when an administrator runs it: no lifecycle command needs its code.
  diagnose: async (request) => (await import('./diagnose/index.js')).diagnose(request),
  // Loaded only when asked for, so that the everyday enable does not load it.
  dryRun: async (context) =>
    (await import('./dry-run.js')).dryRun(context, {
      identity: context.operation.verb === 'install' || !identityConfirmed(context),
    }),
};

function identityConfirmed(context: Pick<OperationContext<LinuxSettings>, 'state'>): boolean {
  return context.state.installed.identityConfirmed === true;
}

function jobBase(context: OperationContext<LinuxSettings>) {
  return {
    machine: realMachine(context.processes, context.clock),
    log: context.log,
    signal: context.signal,
    remainingMs: context.remainingMs,
    saveState: context.saveState,
    currentState: context.currentState,
  };
}

/** Every check and step of install and enable, in order: one substatus entry each. */
const CONFIGURE_STEPS = [...CHECKS, ...CONVERGE_STEPS];

async function checkOnly(context: OperationContext<LinuxSettings>): Promise<Outcome> {
  try {
    const system = await realLinuxSystem(context);
    const results = await runChecks(system, {
      log: context.log,
      signal: context.signal,
      identity: true,
    });
    return {
      status: 'success',
      message: `${machineName(system.metadata.machine)} passed the checks (${results.steps.map((step) => step.name).join(', ')}); the new version's install and enable configure it.`,
      substatus: results.steps,
      installed: {
        ...context.state.installed,
        identityConfirmed: true,
        ...(results.cloud ? { cloud: results.cloud.name } : {}),
      },
    };
  } catch (error) {
    const failure = toFailure(error);
    throw failure.with({ steps: withNotRun(failure.steps, CHECKS) });
  }
}

async function configureVm(
  context: OperationContext<LinuxSettings>,
  which: 'all' | 'cheap',
): Promise<Outcome> {
  let checkSteps: Step[] = [];
  try {
    const system = await realLinuxSystem(context);
    const base = {
      ...jobBase(context),
      architecture: system.architecture,
      settings: context.settings,
    };
    // The AADLoginForLinux check and the plan share one query of the package database.
    let installed: ReadonlyMap<string, string> | undefined;
    const checks = await runChecks(system, {
      log: context.log,
      signal: context.signal,
      identity: which === 'all',
      queryPackages: async (os, names) => {
        installed = await queryPackages({ ...base, os }, names);
        return installed;
      },
    });
    checkSteps = checks.steps;
    const result = await converge({ ...base, os: checks.os, ...(installed ? { installed } : {}) });
    return {
      status: 'success',
      message: `${machineName(system.metadata.machine)} passed the checks; ${result.summary} Repository: ${context.settings.repository.baseUrl ?? DEFAULT_BASE_URL}.`,
      substatus: [...checks.steps, ...result.steps],
      installed: {
        ...result.installation,
        identityConfirmed: true,
        ...(checks.cloud ? { cloud: checks.cloud.name } : {}),
      },
    };
  } catch (error) {
    // A failed check carries its own steps; a failed step carries the converge steps so far.
    const failure = toFailure(error);
    const steps = failure.steps.some((step) => (CHECKS as readonly string[]).includes(step.name))
      ? failure.steps
      : [...checkSteps, ...failure.steps];
    throw failure.with({ steps: withNotRun(steps, CONFIGURE_STEPS) });
  }
}
