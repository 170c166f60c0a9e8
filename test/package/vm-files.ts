/**
 * The files AADSSHLoginForLinux writes on a Linux VM, as the package tests look for them. They are
 * written out here rather than imported from src/, so that a changed path fails a test instead of
 * moving silently with the code.
 */

/** apt's source file. */
export const LIST = '/etc/apt/sources.list.d/microsoft-prod.list';
/** apt's keyring (`signed-by`), named after the extension so uninstall never removes Microsoft's. */
export const KEYRING = '/usr/share/keyrings/aadsshlogin-microsoft-prod.gpg';
/** dnf's, yum's and tdnf's repository file. */
export const YUM_REPO = '/etc/yum.repos.d/microsoft-prod.repo';
/** zypper's repository file. */
export const ZYPP_REPO = '/etc/zypp/repos.d/microsoft-prod.repo';
/** The rpm family's key file (`gpgkey=file://…`, also imported into rpm). */
export const RPM_KEY = '/etc/pki/rpm-gpg/aadsshlogin-microsoft-prod.asc';
