"""Who may score an endpoint: role assignment commands and a least-privilege role.

Nothing here changes Azure: it builds the ``az`` commands and the role
definition an owner of the workspace runs.
"""

from __future__ import annotations

from typing import Any

from .errors import ConfigError

#: The built-in role that includes scoring (and managing endpoints) in a workspace.
SCORING_ROLE = "AzureML Data Scientist"
#: The data-plane action each auth mode needs: score (Entra ID), get a token, or list keys.
SCORE_ACTION = "Microsoft.MachineLearningServices/workspaces/onlineEndpoints/score/action"
TOKEN_ACTION = "Microsoft.MachineLearningServices/workspaces/onlineEndpoints/token/action"
LIST_KEYS_ACTION = "Microsoft.MachineLearningServices/workspaces/onlineEndpoints/listkeys/action"


def endpoint_resource_id(
    subscription_id: str, resource_group: str, workspace: str, endpoint_name: str
) -> str:
    """The Azure resource id of an online endpoint (the scope for a role assignment)."""
    return (
        f"/subscriptions/{subscription_id}/resourceGroups/{resource_group}/providers/"
        f"Microsoft.MachineLearningServices/workspaces/{workspace}/onlineEndpoints/{endpoint_name}"
    )


def score_access_command(assignee: str, scope: str, role: str = SCORING_ROLE) -> str:
    """The ``az role assignment create`` command giving ``assignee`` ``role`` on ``scope``."""
    if not assignee or not scope.startswith("/subscriptions/"):
        raise ConfigError(
            "give the assignee (user, group or managed identity object id, or a user's "
            "sign-in name) and a resource id scope starting with /subscriptions/"
        )
    return f'az role assignment create --assignee "{assignee}" --role "{role}" --scope "{scope}"'


def scoring_role_definition(subscription_id: str, name: str = "CXRReportGen scorer") -> dict:
    """A least-privilege custom role: score (Entra ID) and fetch aml tokens, nothing else.

    Create it with ``az role definition create --role-definition role.json``,
    then assign it with :func:`score_access_command` (``role=name``).
    """
    return {
        "Name": name,
        "IsCustom": True,
        "Description": "Send scoring requests to Azure ML online endpoints.",
        "Actions": [SCORE_ACTION, TOKEN_ACTION],
        "NotActions": [],
        "AssignableScopes": [f"/subscriptions/{subscription_id}"],
    }


def grant_score_access(
    ml_client: Any, endpoint_name: str, assignee: str, *, role: str = SCORING_ROLE
) -> str:
    """Print (and return) the command that lets ``assignee`` score ``endpoint_name``.

    Nothing is changed: an owner of the workspace (or a User Access
    Administrator) runs the command. The scope is the endpoint alone, so the
    role grants nothing elsewhere in the workspace.
    """
    try:
        scope = ml_client.online_endpoints.get(endpoint_name).id
    except Exception as exc:
        from .deploy import deployment_error

        raise deployment_error(exc, f"looking up endpoint {endpoint_name!r}") from None
    command = score_access_command(assignee, scope, role)
    print(command)
    return command
