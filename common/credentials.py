"""How a service gets a tenant's vendor credentials: ciphertext from the gateway, decrypted here.

The gateway owns credentials and hands out only the Fernet token, so a credential never crosses
the broker in clear. Each service holds the key (IDSYNC_FERNET_KEYS) and decrypts in memory.

    class AutotaskService(ServiceBase):
        gateway = RpcProxy("gateway")
        vault = CredentialVault()
        ...
        document = tenant_credentials(self.gateway, self.vault, tenant_id, "autotask")
"""
from nameko.extensions import DependencyProvider

from common.vault import Vault


class CredentialVault(DependencyProvider):
    def setup(self):
        self.vault = Vault.from_config(self.container.config)

    def get_dependency(self, worker_ctx):
        return self.vault


def tenant_credentials(gateway, vault, tenant_id, kind):
    return vault.decrypt(gateway.tenant_credentials(tenant_id, kind))
