import os

import pytest
from sqlalchemy import create_engine

from common.topology import http_port
from tests.support import infra



@pytest.fixture(scope="session")
def env():
    if not (infra.reachable(infra.PG_PORT) and infra.reachable(infra.AMQP_PORT)):
        pytest.fail(f"PostgreSQL ({infra.PG_PORT}) and RabbitMQ ({infra.AMQP_PORT}) are not running: "
                    "use `make test`, which starts them")
    environment = infra.test_environment()
    os.environ.update({k: environment[k] for k in environment if k.startswith("IDSYNC_")})
    return environment


@pytest.fixture(scope="session")
def stack(env):
    """Every process of the product, as `make up` starts them, against the test database and vhost."""
    infra.stack(env, "up", "--no-seed")
    yield Stack(env)
    infra.stack(env, "down")


class Stack:
    def __init__(self, env):
        self.env = env
        self.amqp_uri = infra.amqp_uri(env)

    def url(self, name, path=""):
        return f"http://127.0.0.1:{http_port(name)}{path}"

    def rpc(self):
        from nameko.standalone.rpc import ClusterRpcProxy

        return ClusterRpcProxy({"AMQP_URI": self.amqp_uri}, timeout=20)


@pytest.fixture(scope="session")
def engines(env):
    made = {}

    def engine(service):
        if service not in made:
            made[service] = create_engine(infra.db_uri(env, service), pool_size=2,
                                          connect_args={"options": f"-c search_path={service}"})
        return made[service]

    yield engine
    for e in made.values():
        e.dispose()
