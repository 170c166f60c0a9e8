import type { Extension, Outcome } from '../lifecycle/extension.js';
import { type LinuxSettings, parseLinuxSettings } from './settings.js';

export const LINUX_HANDLER_NAME = 'Microsoft.Azure.ActiveDirectory.AADSSHLoginForLinux';

/**
 * AADSSHLoginForLinux. This version runs the agent protocol end to end (environment, sequence
 * number, settings, lock, state, status, logs) and changes nothing on the VM yet: the checks and
 * the package installation are the next steps of the lifecycle.
 */
export const aadSshLoginForLinux: Extension<LinuxSettings> = {
  handlerName: LINUX_HANDLER_NAME,
  logFileName: 'aadsshlogin-handler.log',
  parseSettings: parseLinuxSettings,
  run: {
    install: async () => noChanges('installed'),
    enable: async (context) => {
      const mirror = context.settings.repository.baseUrl;
      return noChanges(mirror ? `enabled (repository ${mirror})` : 'enabled');
    },
    disable: async () => noChanges('disabled'),
    uninstall: async () => noChanges('uninstalled'),
    update: async (context) =>
      noChanges(`updated from ${context.agent.updatingFromVersion ?? 'an earlier version'}`),
  },
};

function noChanges(what: string): Outcome {
  return { status: 'success', message: `AADSSHLoginForLinux ${what}; nothing on the VM changed.` };
}
