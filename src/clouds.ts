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
