/**
 * The one catalogue of failures: every way a command can fail, with its exit code, who is to
 * blame, and what the operator should do. Exit codes are below 256 (the OS truncates larger ones);
 * 22, 23 and 51 are documented by Microsoft and fixed. The README's exit-code table is this table.
 *
 * Deep code throws a `HandlerFailure` naming one of these kinds; only the pipeline turns it into a
 * status file and an exit code.
 */

export type Blame = 'vm-configuration' | 'platform';

export interface FailureKind {
  code: number;
  blame: Blame;
  /** One sentence: what went wrong, without the details of this occurrence. */
  title: string;
  /** What the operator does about it. */
  remedy: string;
  /**
   * The status file's `code` when it differs from the exit code: a Windows error (an HRESULT) that
   * does not fit in an exit status is reported in full there, and in the message.
   */
  statusCode?: number;
}

export const failureKinds = {
  unknownCommand: {
    code: 2,
    blame: 'vm-configuration',
    title: 'The handler was run with a command it does not know.',
    remedy:
      'Run it with install, enable, disable, uninstall or update, as HandlerManifest.json does.',
  },
  repositoryUnavailable: {
    code: 20,
    blame: 'vm-configuration',
    title: 'The package repository or its signing keys could not be reached.',
    remedy:
      "Check that the VM reaches the repository named above, directly or through the proxy in http_proxy/https_proxy of the guest agent's service (or set repository.baseUrl to a mirror it can reach), then apply the extension again.",
  },
  registrationMissing: {
    code: 21,
    blame: 'vm-configuration',
    title:
      'The aadsshlogin packages installed, but did not register with sshd, NSS, PAM or SELinux.',
    remedy:
      'Fix the named file as described, then apply the extension again; packages this run installed were removed again, so the next run starts clean.',
  },
  noSystemAssignedIdentity: {
    code: 22,
    blame: 'vm-configuration',
    title: 'The VM has no system-assigned managed identity.',
    remedy:
      'Enable the system-assigned managed identity on the VM (az vm identity assign), then reinstall the extension.',
  },
  legacyExtensionInstalled: {
    code: 23,
    blame: 'vm-configuration',
    title: 'The deprecated AADLoginForLinux extension is still installed.',
    remedy:
      'Remove AADLoginForLinux first (az vm extension delete --name AADLoginForLinux), then install AADSSHLoginForLinux. If its removal is stuck, remove the packages by hand, aadlogin first, then aadlogin-selinux (apt remove --purge, yum remove or zypper remove; see "Problems deleting the old (AADLoginForLinux) extension" in the documentation).',
  },
  entraTenantUnavailable: {
    code: 30,
    blame: 'vm-configuration',
    title:
      "Terminal error 1007, DSREG_E_MSI_TENANTID_UNAVAILABLE (-2145648574): IMDS does not give the VM's tenant, so the VM has no system-assigned managed identity.",
    remedy:
      'Enable the system-assigned managed identity on the VM (az vm identity assign), then reinstall the extension.',
    statusCode: -2145648574,
  },
  deviceRegistrationUnreachable: {
    code: 31,
    blame: 'vm-configuration',
    title:
      "DSREG_AUTOJOIN_DISC_FAILED (-2145648607): the cloud's device registration service cannot be reached.",
    remedy:
      'Check name resolution ("nslookup <endpoint>", and "nslookup <endpoint> 208.67.222.222" to compare with a public resolver) and that the firewall or proxy lets the VM reach it on TCP 443, then apply the extension again.',
    statusCode: -2145648607,
  },
  joinedOtherwise: {
    code: 32,
    blame: 'vm-configuration',
    title:
      'DSREG_E_VM_JOINED_NOT_AZURESECUREVM (-2145648572): the VM is already joined to Microsoft Entra ID, but not by the secure VM join this extension uses.',
    remedy:
      'Leave the current join (dsregcmd /leave, as an administrator), restart, then apply the extension again.',
    statusCode: -2145648572,
  },
  duplicateHostname: {
    code: 33,
    blame: 'vm-configuration',
    title:
      'DSREG_HOSTNAME_DUPLICATE (-2145648509): a device with the same name already exists in the tenant.',
    remedy:
      'Delete the stale device in Microsoft Entra ID (Devices, All devices) or give the VM a unique name, then apply the extension again.',
    statusCode: -2145648509,
  },
  entraJoinFailed: {
    code: 34,
    blame: 'vm-configuration',
    title: 'dsregcmd could not join the VM to Microsoft Entra ID, or leave it.',
    remedy:
      'See the code and dsregcmd output above, and the event log "Applications and Services Logs > Microsoft > Windows > User Device Registration > Admin", then apply the extension again.',
  },
  insufficientMemory: {
    code: 24,
    blame: 'vm-configuration',
    title: 'The VM has less memory than the extension needs.',
    remedy:
      'Resize the VM to a size with at least 1 GiB of memory, then install the extension again.',
  },
  imdsUnreachable: {
    code: 25,
    blame: 'vm-configuration',
    title: 'The Azure Instance Metadata Service (169.254.169.254) did not answer usefully.',
    remedy:
      'Check that the VM has a route to 169.254.169.254 and that no firewall or proxy intercepts it (set no_proxy=169.254.169.254 for the guest agent), then apply the extension again.',
  },
  packageManagerBusy: {
    code: 26,
    blame: 'vm-configuration',
    title: 'The package manager stayed busy with another program.',
    remedy:
      'Wait for the named program to finish (unattended-upgrades, cloud-init or dnf-automatic often run after the first boot), then apply the extension again.',
  },
  untrustedRepositoryKey: {
    code: 27,
    blame: 'vm-configuration',
    title: "The repository's signing keys are not among the trusted ones.",
    remedy:
      "If the repository is your own mirror, add its signing key's fingerprint to the public setting repository.keyFingerprints; otherwise check that nothing between the VM and the repository replaces its files. Nothing on the VM was changed.",
  },
  packageManagerFailed: {
    code: 28,
    blame: 'vm-configuration',
    title: 'The package manager failed to install or remove the aadsshlogin packages.',
    remedy:
      "Read the package manager's message above and in the handler log, repair the VM's package configuration (broken dependencies, a full disk, another repository that fails), then apply the extension again.",
  },
  arcAgentUnavailable: {
    // 29 is diagnose's "problems found" (diagnose/report.ts).
    code: 35,
    blame: 'vm-configuration',
    title:
      "The Azure Connected Machine agent did not give the Arc-enabled server's identity or configuration (HIMDS at 127.0.0.1:40342, /var/opt/azcmagent).",
    remedy:
      'Run "azcmagent show": the agent must be Connected and its himdsd service running; if it is Disconnected or Expired, reconnect it (azcmagent connect). If the message names a key file or localconfig.json, check that only the agent writes /var/opt/azcmagent and that nothing else listens on 127.0.0.1:40342. Then apply the extension again.',
  },
  unsupportedOperatingSystem: {
    code: 51,
    blame: 'vm-configuration',
    title: "This extension isn't supported on the VM's operating system.",
    remedy:
      'See the supported operating systems: Linux https://learn.microsoft.com/entra/identity/devices/howto-vm-sign-in-azure-ad-linux#supported-linux-distributions-and-azure-regions, Windows https://learn.microsoft.com/entra/identity/devices/howto-vm-sign-in-azure-ad-windows#requirements.',
  },
  runtimeCannotStart: {
    code: 52,
    blame: 'vm-configuration',
    title: "The handler's executable cannot run on this VM.",
    remedy:
      'Check that the VM is x86_64 or aarch64 and that /var/lib/waagent is not mounted noexec, then retry.',
  },
  invalidSettings: {
    code: 53,
    blame: 'vm-configuration',
    title: "The extension's public settings are invalid.",
    remedy: 'Correct the named setting and apply the extension again.',
  },
  handlerEnvironmentInvalid: {
    code: 60,
    blame: 'platform',
    title: 'HandlerEnvironment.json, written by the guest agent, is missing or malformed.',
    remedy:
      'Reinstall the extension so the guest agent writes it again; if it persists, update the guest agent (waagent).',
  },
  protectedSettingsUnreadable: {
    code: 61,
    blame: 'platform',
    title: "The extension's protected settings could not be decrypted.",
    remedy:
      "Check that the certificate named by protectedSettingsCertThumbprint is in the guest agent's folder, or apply the extension again so the agent fetches it.",
  },
  handlerBusy: {
    code: 62,
    blame: 'platform',
    title: 'Another command of this extension was still running.',
    remedy:
      'Wait for it to finish; the guest agent retries at the next goal state. If it never finishes, end the named process.',
  },
  deadlineExceeded: {
    code: 63,
    blame: 'platform',
    title: 'The command did not finish in the time the guest agent allows.',
    remedy: 'See the handler log for the step that was slow, then apply the extension again.',
  },
  cannotWriteHandlerFiles: {
    code: 64,
    blame: 'vm-configuration',
    title: 'The handler could not write its status, state or lock file.',
    remedy:
      'Free space (and inodes) on the file system holding the named folder (usually /var/lib/waagent), or make it writable again, then apply the extension again.',
  },
  unexpected: {
    code: 70,
    blame: 'platform',
    title: 'The handler failed unexpectedly.',
    remedy: 'Apply the extension again; if it fails again, report the message and the handler log.',
  },
} as const satisfies Record<string, FailureKind>;

export type FailureKindName = keyof typeof failureKinds;

/** A check or step reported with a failure, as the status file's substatus shows it. */
export interface FailureStep {
  name: string;
  /**
   * `transitioning` marks a step that never ran (an earlier one failed): the agent knows only
   * success, transitioning, warning and error, and a step that did not run neither succeeded
   * nor warned about anything.
   */
  status: 'success' | 'warning' | 'error' | 'transitioning';
  code: number;
  message: string;
}

/**
 * The steps of a command that stopped early, completed to one entry for each of `names` (every
 * check and step the command has, in order): those that did not run are marked as not run, naming
 * the step that failed, so the portal shows the whole list and which one stopped it.
 */
export function withNotRun(steps: readonly FailureStep[], names: readonly string[]): FailureStep[] {
  const failed = steps.find((step) => step.status === 'error')?.name;
  const reason = failed ? `${failed} failed first` : 'the command stopped before it';
  const missing = names
    .filter((name) => !steps.some((step) => step.name === name))
    .map((name) => ({
      name,
      status: 'transitioning' as const,
      code: 0,
      message: `Not run: ${reason}.`,
    }));
  const order = (step: FailureStep) => {
    const index = names.indexOf(step.name);
    return index === -1 ? names.length : index;
  };
  return [...steps, ...missing].sort((a, b) => order(a) - order(b));
}

/** A failure of a known kind, with the details of this occurrence (never a secret). */
export class HandlerFailure extends Error {
  override readonly name = 'HandlerFailure';
  /** The checks and steps that ran before and including the failing one. */
  readonly steps: readonly FailureStep[];
  /** This occurrence's status code, when it is not the kind's (e.g. dsregcmd's own error). */
  private readonly occurrenceStatusCode: number | undefined;
  constructor(
    readonly kind: FailureKindName,
    readonly detail: string,
    options?: { cause?: unknown; steps?: readonly FailureStep[]; statusCode?: number },
  ) {
    super(detail, options);
    this.steps = options?.steps ?? [];
    this.occurrenceStatusCode = options?.statusCode;
  }

  get code(): number {
    return failureKinds[this.kind].code;
  }

  /**
   * The same failure with its steps (and optionally its detail) replaced, keeping its kind, its
   * status code and its cause: how a caller adds the steps it knows about on the way up.
   */
  with(change: { steps?: readonly FailureStep[]; detail?: string }): HandlerFailure {
    return new HandlerFailure(this.kind, change.detail ?? this.detail, {
      cause: this.cause ?? this,
      steps: change.steps ?? this.steps,
      statusCode: this.occurrenceStatusCode,
    });
  }

  /** The status file's `code`: the exit code, or the full Windows error where there is one. */
  get statusCode(): number {
    const kind: FailureKind = failureKinds[this.kind];
    return this.occurrenceStatusCode ?? kind.statusCode ?? this.code;
  }

  /** The operator's message: what happened here, then what to do. */
  get operatorMessage(): string {
    const kind: FailureKind = failureKinds[this.kind];
    const detail = this.detail.trim();
    // A documented Windows error leads with its documented name and number.
    const title = kind.statusCode !== undefined && detail ? `${kind.title} ` : '';
    return `${title}${detail || kind.title} ${kind.remedy}`;
  }
}

/** Any thrown value as a catalogued failure; unknown errors keep their message, never a stack. */
export function toFailure(error: unknown): HandlerFailure {
  if (error instanceof HandlerFailure) return error;
  const message = error instanceof Error ? error.message : String(error);
  return new HandlerFailure('unexpected', `${failureKinds.unexpected.title} ${message}`, {
    cause: error,
  });
}
