import type { Extension, OperationContext, Outcome } from '../lifecycle/extension.js';
import { runChecks } from './checks/index.js';
import { type LinuxSettings, parseLinuxSettings } from './settings.js';
import { realLinuxSystem } from './system.js';

export const LINUX_HANDLER_NAME = 'Microsoft.Azure.ActiveDirectory.AADSSHLoginForLinux';

/**
 * AADSSHLoginForLinux. `install`, `update` and `enable` run the checks (operating system, memory,
 * AADLoginForLinux, managed identity) before anything changes; a converged `enable` repeats only
 * the cheap ones. The repository and the packages are the next steps of the lifecycle and are not
 * in this version: nothing on the VM changes yet.
 */
export const aadSshLoginForLinux: Extension<LinuxSettings> = {
  handlerName: LINUX_HANDLER_NAME,
  logFileName: 'aadsshlogin-handler.log',
  parseSettings: parseLinuxSettings,
  run: {
    install: (context) => checkVm(context, 'all'),
    update: (context) => checkVm(context, 'all'),
    enable: (context) => checkVm(context, identityConfirmed(context) ? 'cheap' : 'all'),
    disable: async () => ({
      status: 'success',
      message: 'nothing to do: Entra ID login stays configured.',
    }),
    uninstall: async () => ({ status: 'success', message: 'nothing on the VM to remove.' }),
  },
};

function identityConfirmed(context: OperationContext<LinuxSettings>): boolean {
  return context.state.installed.identityConfirmed === true;
}

async function checkVm(
  context: OperationContext<LinuxSettings>,
  which: 'all' | 'cheap',
): Promise<Outcome> {
  const results = await runChecks(realLinuxSystem(context), {
    log: context.log,
    signal: context.signal,
    identity: which === 'all',
  });
  return {
    status: 'success',
    message: `the VM passed the checks (${results.steps.map((step) => step.name).join(', ')}); the repository (${context.settings.repository.baseUrl ?? 'https://packages.microsoft.com'}) and the packages are not configured by this version.`,
    substatus: results.steps,
    installed: {
      ...context.state.installed,
      identityConfirmed: true,
      ...(results.cloud ? { cloud: results.cloud.name } : {}),
    },
  };
}
