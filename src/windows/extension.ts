import type { FailureStep } from '../failures.js';
import { HandlerFailure, toFailure } from '../failures.js';
import type { Extension, OperationContext, Outcome } from '../lifecycle/extension.js';
import { joinEntra, leaveEntra } from './join.js';
import {
  CURRENT_VERSION_KEY,
  PRODUCT_OPTIONS_KEY,
  realWindowsPlatform,
  type WindowsPlatform,
} from './platform.js';
import {
  describeWindows,
  UNSUPPORTED,
  type WindowsVersion,
  windowsSupportVerdict,
} from './support.js';

export const WINDOWS_HANDLER_NAME = 'Microsoft.Azure.ActiveDirectory.AADLoginForWindows';

type Settings = Record<string, never>;

/**
 * AADLoginForWindows: `install` and `update` check the Windows version (51); `enable` checks it
 * and joins the VM to Microsoft Entra ID (join.ts); `disable` changes nothing; `uninstall` leaves
 * the tenant. Everything Windows-specific comes through a `WindowsPlatform`, so the same lifecycle
 * runs on Linux against a fake.
 */
export function createAadLoginForWindows(
  platformFor: (context: OperationContext<Settings>) => WindowsPlatform,
): Extension<Settings> {
  return {
    handlerName: WINDOWS_HANDLER_NAME,
    logFileName: 'CommandExecution.log',
    parseSettings: (publicSettings) => ({
      settings: {},
      // Arc requires `mdmId` (an empty string is allowed); it is accepted and not used yet.
      warnings: Object.keys(publicSettings)
        .filter((key) => key !== 'mdmId')
        .map((key) => `Unknown public setting "${key}" is ignored.`),
    }),
    run: {
      install: async (context) => checkOnly(platformFor(context), context),
      update: async (context) => checkOnly(platformFor(context), context),
      enable: async (context) => {
        const platform = platformFor(context);
        const checked = await checkWindows(platform, context);
        try {
          const joined = await joinEntra({ platform, log: context.log, signal: context.signal });
          return {
            status: 'success',
            message: joined.message,
            substatus: [checked, ...joined.steps],
          };
        } catch (error) {
          const failure = toFailure(error);
          throw failure.with({ steps: [checked, ...failure.steps] });
        }
      },
      disable: async () => ({
        status: 'success',
        message: 'nothing to do: the VM stays joined to Microsoft Entra ID.',
      }),
      uninstall: async (context) => ({
        status: 'success',
        message: await leaveEntra({
          platform: platformFor(context),
          log: context.log,
          signal: context.signal,
        }),
      }),
    },
  };
}

export const aadLoginForWindows = createAadLoginForWindows((context) =>
  realWindowsPlatform(context.processes, context.clock),
);

async function checkOnly(
  platform: WindowsPlatform,
  context: OperationContext<Settings>,
): Promise<Outcome> {
  const checked = await checkWindows(platform, context);
  return { status: 'success', message: checked.message, substatus: [checked] };
}

/** The support check, as a substatus step; unsupported is exit code 51. */
async function checkWindows(
  platform: WindowsPlatform,
  context: OperationContext<Settings>,
): Promise<FailureStep> {
  const version = await readWindowsVersion(platform);
  const verdict = windowsSupportVerdict(version);
  if (!verdict.supported) {
    context.log.error(`Check OperatingSystem failed: ${verdict.reason}`);
    throw new HandlerFailure('unsupportedOperatingSystem', verdict.reason, {
      steps: [{ name: 'OperatingSystem', status: 'error', code: 51, message: verdict.reason }],
    });
  }
  context.log.info(`Check OperatingSystem passed: ${verdict.description}`);
  return { name: 'OperatingSystem', status: 'success', code: 0, message: verdict.description };
}

async function readWindowsVersion(platform: WindowsPlatform): Promise<WindowsVersion> {
  const [build, installationType, productName, productType] = await Promise.all([
    platform.readRegistry(CURRENT_VERSION_KEY, 'CurrentBuildNumber'),
    platform.readRegistry(CURRENT_VERSION_KEY, 'InstallationType'),
    platform.readRegistry(CURRENT_VERSION_KEY, 'ProductName'),
    platform.readRegistry(PRODUCT_OPTIONS_KEY, 'ProductType'),
  ]);
  const version = {
    build: Number(build),
    installationType: installationType ?? '',
    productName: productName ?? '',
    productType: productType ?? 'WinNT',
  };
  if (build === undefined) {
    throw new HandlerFailure(
      'unsupportedOperatingSystem',
      `${UNSUPPORTED} ${describeWindows(version)}: the registry has no ${CURRENT_VERSION_KEY}\\CurrentBuildNumber, so the Windows version is unknown.`,
    );
  }
  return version;
}
