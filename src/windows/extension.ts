import type { Extension, Outcome } from '../lifecycle/extension.js';

export const WINDOWS_HANDLER_NAME = 'Microsoft.Azure.ActiveDirectory.AADLoginForWindows';

/**
 * AADLoginForWindows. This version runs the agent protocol end to end and changes nothing on the
 * VM yet: the OS check and the Entra join are the next steps of the lifecycle.
 */
export const aadLoginForWindows: Extension<Record<string, never>> = {
  handlerName: WINDOWS_HANDLER_NAME,
  logFileName: 'CommandExecution.log',
  parseSettings: (publicSettings) => ({
    settings: {},
    warnings: Object.keys(publicSettings).map(
      (key) => `Unknown public setting "${key}" is ignored.`,
    ),
  }),
  run: {
    install: async () => noChanges('installed'),
    enable: async () => noChanges('enabled'),
    disable: async () => noChanges('disabled'),
    uninstall: async () => noChanges('uninstalled'),
    update: async () => noChanges('updated'),
  },
};

function noChanges(what: string): Outcome {
  return { status: 'success', message: `AADLoginForWindows ${what}; nothing on the VM changed.` };
}
