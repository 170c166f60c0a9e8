import type { Clock } from './io/clock.js';
import { getWithRetries, type Imds } from './io/imds.js';

/**
 * The Azure clouds and their endpoints, chosen by IMDS `compute/azEnvironment` (compared without
 * regard to case: IMDS has been seen answering `AZUREPUBLICCLOUD`).
 */
export interface Cloud {
  name: string;
  signIn: string;
  rbac: string;
  deviceRegistration: string;
}

export const clouds: readonly Cloud[] = [
  {
    name: 'AzurePublicCloud',
    signIn: 'login.microsoftonline.com',
    rbac: 'pas.windows.net',
    deviceRegistration: 'enterpriseregistration.windows.net',
  },
  {
    name: 'AzureUSGovernmentCloud',
    signIn: 'login.microsoftonline.us',
    rbac: 'pasff.usgovcloudapi.net',
    deviceRegistration: 'enterpriseregistration.microsoftonline.us',
  },
  {
    name: 'AzureChinaCloud',
    signIn: 'login.chinacloudapi.cn',
    rbac: 'pas.chinacloudapi.cn',
    deviceRegistration: 'enterpriseregistration.partner.microsoftonline.cn',
  },
];

/** The cloud named by `azEnvironment`, or `undefined` for one not in the table. */
export function cloudNamed(azEnvironment: string): Cloud | undefined {
  const wanted = azEnvironment.trim().toLowerCase();
  return clouds.find((cloud) => cloud.name.toLowerCase() === wanted);
}

const AZ_ENVIRONMENT_PATH =
  '/metadata/instance/compute/azEnvironment?api-version=2018-10-01&format=text';

/** The cloud IMDS names (`compute/azEnvironment`); `undefined` when IMDS does not say. */
export async function readCloud(
  imds: Imds,
  options: { clock: Clock; signal?: AbortSignal },
): Promise<Cloud | undefined> {
  const result = await getWithRetries(imds, AZ_ENVIRONMENT_PATH, {
    clock: options.clock,
    budgetMs: 10_000,
    ...(options.signal ? { signal: options.signal } : {}),
  });
  return result.ok && result.answer.status === 200 ? cloudNamed(result.answer.body) : undefined;
}
