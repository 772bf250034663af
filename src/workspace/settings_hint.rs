//! What to do about each [`SettingsError`]: its own hint per problem, so a malformed token is not
//! answered with "set an endpoint".

use super::SettingsError;

impl SettingsError {
    /// What to do about it.
    pub fn hint(&self) -> &'static str {
        match self {
            SettingsError::NoEndpoint => {
                "set PROXMOX_VE_ENDPOINT=https://HOST:8006/ (or endpoint in provision.toml), or add --simulate"
            }
            SettingsError::BadEndpoint(_) => {
                "write the endpoint as https://HOST:8006/ (Proxmox serves its API over HTTPS only)"
            }
            SettingsError::NoCredentials => {
                "create a token with `pveum user token add USER@REALM TOKENID --privsep 0` and set PROXMOX_VE_API_TOKEN='USER@REALM!TOKENID=SECRET'"
            }
            SettingsError::SecretFile { .. } => {
                "check the file named in provision.toml exists, is yours and is readable only by you (chmod 600)"
            }
            SettingsError::BadToken => {
                "PROXMOX_VE_API_TOKEN (or api_token_file) holds USER@REALM!TOKENID=SECRET, e.g. provision@pve!ci=0b0e…; the secret is the UUID `pveum user token add` printed"
            }
            SettingsError::BadFingerprint(_) => {
                "copy the SHA-256 fingerprint as `pvenode cert info` (or `provision sim serve`) prints it: 32 hex bytes separated by colons"
            }
            SettingsError::BadInsecure(_) => {
                "set PROXMOX_VE_INSECURE=true or false (better: pin the certificate with PROXMOX_VE_FINGERPRINT)"
            }
        }
    }
}
