import { type Cloud, readCloud } from '../clouds.js';
import type { Clock } from '../io/clock.js';
import { directHimds, HIMDS_ADDRESS } from '../io/himds.js';
import { directImds, IMDS_HOST, type Imds } from '../io/imds.js';
import type { Log } from '../io/log.js';
import { checkArcIdentity, readArcCloud } from './checks/arc-identity.js';
import { checkSystemAssignedIdentity } from './checks/identity.js';
import type { MachineKind } from './machine-kind.js';

/**
 * "The metadata service" of the machine the handler runs on: IMDS on an Azure VM, the Connected
 * Machine agent's HIMDS on an Azure Arc-enabled server. The checks ask it for the identity and
 * the cloud and do not know which one it is; machine-kind.ts decides which one they get.
 */
export interface MetadataService {
  /** The machine it belongs to (for the log and the status). */
  readonly machine: MachineKind;
  /** The service and its address, for messages. */
  readonly name: string;
  /**
   * Whether the machine has its system-assigned identity: a sentence for the status, or a
   * `HandlerFailure` (on an Azure VM 22 or 25, on Arc 35).
   */
  confirmIdentity(options: { clock: Clock; log: Log; signal?: AbortSignal }): Promise<string>;
  /** The cloud the service names; `undefined` when it does not say. */
  readCloud(options: { clock: Clock; signal?: AbortSignal }): Promise<Cloud | undefined>;
}

export const AZURE_VM: MachineKind = {
  kind: 'azure-vm',
  description: 'Azure VM',
  evidence: 'assumed',
};

/** IMDS at 169.254.169.254 (or the fake a test passes). */
export function azureMetadataService(imds: Imds, machine: MachineKind = AZURE_VM): MetadataService {
  return {
    machine,
    name: `IMDS (${IMDS_HOST})`,
    confirmIdentity: (options) => checkSystemAssignedIdentity({ imds, ...options }),
    readCloud: (options) => readCloud(imds, options),
  };
}

/** HIMDS at 127.0.0.1:40342, answering its own challenge (or the fake a test passes). */
export function arcMetadataService(himds: Imds, machine: MachineKind): MetadataService {
  return {
    machine,
    name: `HIMDS (${HIMDS_ADDRESS})`,
    confirmIdentity: (options) => checkArcIdentity({ himds, ...options }),
    readCloud: (options) => readArcCloud(himds, options),
  };
}

/**
 * The real service of a machine of this kind, reached directly. `onSecret` receives HIMDS's key
 * before it is sent, to be kept out of the log and the status.
 */
export function metadataServiceOf(
  machine: MachineKind,
  options: { onSecret?: (secret: string) => void } = {},
): MetadataService {
  return machine.kind === 'arc'
    ? arcMetadataService(directHimds(options), machine)
    : azureMetadataService(directImds(), machine);
}
