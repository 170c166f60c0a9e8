/**
 * Which machine the handler runs on, from local facts only: an Azure Arc-enabled server (the
 * Connected Machine agent runs the extension, metadata and identity come from HIMDS) or an Azure
 * VM (the guest agent, IMDS at 169.254.169.254). Never decided by waiting for 169.254.169.254 to
 * time out: on Arc it is absent, or blocked.
 *
 * Arc when the agent's HIMDS executable exists, as Microsoft's own installer and MSAL decide it;
 * the agent's `IMDS_ENDPOINT`/`IDENTITY_ENDPOINT` variables and its systemd drop-in, when present,
 * are named as confirmation.
 */
export const HIMDS_EXECUTABLE = '/opt/azcmagent/bin/himds';
/** Where the agent sets `IMDS_ENDPOINT` and `IDENTITY_ENDPOINT` for every service. */
export const AZCMAGENT_SYSTEMD_CONF = '/lib/systemd/system.conf.d/azcmagent.conf';

export type MachineKindName = 'azure-vm' | 'arc';

export interface MachineKind {
  kind: MachineKindName;
  /** For the log and the status: "Azure VM" or "Azure Arc-enabled server". */
  description: string;
  /** What the decision rests on. */
  evidence: string;
}

/** What the detector reads of the machine. */
export interface MachineFacts {
  /** Whether `file` exists (any type). */
  exists(file: string): Promise<boolean>;
  readText(file: string): Promise<string | undefined>;
  env: Readonly<Record<string, string | undefined>>;
}

/** Decides the machine kind (see the file comment). Reads two files at most; no network. */
export async function detectMachineKind(facts: MachineFacts): Promise<MachineKind> {
  if (!(await facts.exists(HIMDS_EXECUTABLE))) {
    return {
      kind: 'azure-vm',
      description: 'Azure VM',
      evidence: `${HIMDS_EXECUTABLE} does not exist (no Azure Connected Machine agent)`,
    };
  }
  const confirmations: string[] = [];
  const variables = ['IMDS_ENDPOINT', 'IDENTITY_ENDPOINT'].filter((name) =>
    facts.env[name]?.trim(),
  );
  if (variables.length > 0) confirmations.push(`${variables.join(' and ')} set`);
  const dropIn = await facts.readText(AZCMAGENT_SYSTEMD_CONF);
  if (dropIn !== undefined && /IMDS_ENDPOINT=/.test(dropIn)) {
    confirmations.push(`${AZCMAGENT_SYSTEMD_CONF} sets IMDS_ENDPOINT`);
  }
  return {
    kind: 'arc',
    description: 'Azure Arc-enabled server',
    evidence: `${HIMDS_EXECUTABLE} exists${confirmations.length ? `; ${confirmations.join('; ')}` : ' (no IMDS_ENDPOINT/IDENTITY_ENDPOINT to confirm it)'}`,
  };
}
