"""The Redis state store: the one module that knows every Redis key.

Key schema (every key is prefixed `lada:{run_id}:`, so runs never collide):

| key                          | type   | holds                                               |
|------------------------------|--------|-----------------------------------------------------|
| `run`                        | hash   | policy, total_rounds, pool_fingerprint, pool_size,   |
|                              |        | current_round, created_ms, llm_version, finished_ms  |
| `agents`                     | zset   | agent_id -> registration sequence                    |
| `agent:{agent_id}`           | hash   | name, model_description, tokenizer_name, domain_tags |
|                              |        | (JSON), capacity, first_round, status, token_hash,   |
|                              |        | last_heartbeat_ms                                    |
| `agent_names`                | hash   | name -> agent_id (names are unique per run)          |
| `tokens`                     | hash   | token hash -> agent_id (who is calling)              |
| `invites`                    | hash   | invitation_id -> JSON {name, secret_hash, created_ms,|
|                              |        | expires_ms, agent_id, used_ms, revoked_ms, open}     |
| `invite_secrets`             | hash   | enrollment secret hash -> invitation_id              |
| `round:{r}`                  | hash   | phase, deadline_ms, opened_ms, closed_ms,            |
|                              |        | allocated_ms, contrib_{accepted,rejected_incorrect,  |
|                              |        | rejected_unsound,rejected_over_cap} (counters)       |
| `round:{r}:agents`           | hash   | agent_id -> AgentRoundState name                     |
| `round:{r}:learners`         | hash   | agent_id -> learner JSON as folded after round r     |
|                              |        | (the band's and arms' history, for reports)          |
| `events`                     | stream | round events: round, phase, ts_ms (+ finished=1 once |
|                              |        | the last round closed)                               |
| `alloc:{r}:{agent_id}`       | hash   | sample_id -> JSON {cluster, version, [scan,] pos}    |
| `requests:{r}:{agent_id}`    | list   | sample IDs the agent is asked to contribute paths on |
|                              |        | (method.md 2), written with `alloc:{r}:*`            |
| `stats:{r}:{agent_id}`       | hash   | sample_id -> serialized lada.v1.SampleStats          |
| `policy:{name}`              | hash   | policy-private state (bandit arms, bands), JSON;     |
|                              |        | `policy:learners` holds agent_id -> {reward_sum,     |
|                              |        | pulls, band}, folded_round, absorbed_round           |
| `gaps:{agent_id}`            | hash   | sample_id -> "gap|solved" from the agent's latest    |
|                              |        | report on it (gap "nan" when no LLM path is correct) |
| `llm_acc`                    | hash   | sample_id -> "correct/total" of the LLM's paths      |
| `contrib:{r}`                | hash   | "{agent_id}|{sample_id}" -> path text                |
| `contrib:{r}:counts`         | hash   | agent_id -> contributions recorded (the cap)         |
| `absorbed`                   | set    | sample IDs the LLM has absorbed                      |
| `blob:{name}`                | string | large artefacts (cluster model, assignments);        |
|                              |        | `blob:policy_eenet`: the `eenet` policy's networks   |
|                              |        | and optimisers (torch.save), with their round        |
| `lock:{name}`                | string | leases (the round driver's leader lock)              |

The LLM service's shared path cache (`PathCacheStore`) is not part of any run: its keys
are prefixed `lada:pathcache:{model_id}:` instead, so every run and every LLM-service
replica serving the same model (same weights, backend and dtype) shares them:

| key                          | type   | holds                                               |
|------------------------------|--------|-----------------------------------------------------|
| `{version}:{entry_digest}`   | string | one serialized SampleResult (the paths of one        |
|                              |        | sample or prompt under one sampling), with a TTL     |
|                              |        | (`PATH_CACHE_TTL_S`, 7 days, by default)             |

Round transitions are compare-and-set Lua scripts, so several allocator replicas can
share one Redis; a registration (name, record, token, invitation use) and a report stream
are each one Lua script that checks everything before its first write (all or nothing);
other multi-key writes (allocations, folds) are WATCH + MULTI/EXEC. What every agent RPC
does (find and check the caller by its token; a heartbeat with it) is one round trip each:
Redis round trips are most of an RPC's cost in the allocator.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import redis

from llm_service.types import BASE_VERSION

KEY_ROOT = "lada"


class Phase(StrEnum):
    """Round phases, in order (names match lada.v1.RoundPhase without the prefix)."""

    OPEN = "OPEN"
    ALLOCATED = "ALLOCATED"
    TRAINING = "TRAINING"
    REPORTED = "REPORTED"
    CLOSED = "CLOSED"


class AgentRoundState(StrEnum):
    ALLOCATED = "ALLOCATED"
    TRAINING = "TRAINING"
    REPORTED = "REPORTED"
    LATE = "LATE"
    LOST = "LOST"


class AgentStatus(StrEnum):
    ACTIVE = "ACTIVE"
    DEREGISTERED = "DEREGISTERED"
    REVOKED = "REVOKED"


# Which phases a round may move to from each phase (CLOSED is final).
ALLOWED_TRANSITIONS: dict[Phase, tuple[Phase, ...]] = {
    Phase.OPEN: (Phase.ALLOCATED,),
    Phase.ALLOCATED: (Phase.TRAINING, Phase.REPORTED),
    Phase.TRAINING: (Phase.REPORTED,),
    Phase.REPORTED: (Phase.CLOSED,),
    Phase.CLOSED: (),
}

# KEYS: round hash, events stream, run hash. ARGV: round, allowed-from (comma list),
# new phase, now_ms. Sets the phase only if the current one is allowed; logs the event.
_TRANSITION_LUA = """
local current = redis.call('HGET', KEYS[1], 'phase')
if not current then return {0, ''} end
local allowed = false
for phase in string.gmatch(ARGV[2], '[^,]+') do
  if phase == current then allowed = true end
end
if not allowed then return {0, current} end
redis.call('HSET', KEYS[1], 'phase', ARGV[3])
if ARGV[3] == 'CLOSED' then redis.call('HSET', KEYS[1], 'closed_ms', ARGV[4]) end
redis.call('XADD', KEYS[2], '*', 'round', ARGV[1], 'phase', ARGV[3], 'ts_ms', ARGV[4])
return {1, current}
"""

# KEYS: run hash, round hash, events stream. ARGV: round, now_ms, deadline_ms.
# Opens round r only if the previous round is closed (or r == 1) and r is not open yet.
_OPEN_ROUND_LUA = """
local current = tonumber(redis.call('HGET', KEYS[1], 'current_round') or '0')
local wanted = tonumber(ARGV[1])
if wanted ~= current + 1 then return 0 end
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('HSET', KEYS[2], 'phase', 'OPEN', 'opened_ms', ARGV[2], 'deadline_ms', ARGV[3])
redis.call('HSET', KEYS[1], 'current_round', ARGV[1])
redis.call('XADD', KEYS[3], '*', 'round', ARGV[1], 'phase', 'OPEN', 'ts_ms', ARGV[2])
return 1
"""

# KEYS: lock key. ARGV: owner, ttl_ms. Take or renew a lease.
_LEASE_LUA = """
local holder = redis.call('GET', KEYS[1])
if (not holder) or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""


# KEYS: round agents hash, round hash, events stream. ARGV: agent_id, round, now_ms,
# round_too (0/1). ALLOCATED -> TRAINING for that agent and, with round_too, for the round
# (logging the event, as a transition does): one round trip for a fetched allocation.
_MARK_TRAINING_LUA = """
if redis.call('HGET', KEYS[1], ARGV[1]) == 'ALLOCATED' then
  redis.call('HSET', KEYS[1], ARGV[1], 'TRAINING')
end
if ARGV[4] == '1' and redis.call('HGET', KEYS[2], 'phase') == 'ALLOCATED' then
  redis.call('HSET', KEYS[2], 'phase', 'TRAINING')
  redis.call('XADD', KEYS[3], '*', 'round', ARGV[2], 'phase', 'TRAINING', 'ts_ms', ARGV[3])
end
return 1
"""

# Lua chunks the scripts below share. Key prefixes come in as ARGV from StateStore.key, so
# the key layout has one owner. `caller`: the agent a token hash belongs to and its key.
_CALLER_FN = """
local function caller(tokens_key, token_hash, agent_prefix)
  local agent_id = redis.call('HGET', tokens_key, token_hash)
  if not agent_id then return nil, nil end
  return agent_id, agent_prefix .. agent_id
end
"""
# `checked_caller`: the token's agent, its key and record, and whether the caller may act
# (the token is the agent's, the agent ACTIVE and the one claimed; '' claims the token's own):
# the check the one-round-trip RPC scripts make before they read or write anything.
_CHECKED_CALLER_FN = (
    _CALLER_FN
    + """
local function checked_caller(tokens_key, token_hash, agent_prefix, claimed)
  local agent_id, agent_key = caller(tokens_key, token_hash, agent_prefix)
  if not agent_id then return nil, nil, nil, false end
  local record = redis.call('HGETALL', agent_key)
  local ok = redis.call('HGET', agent_key, 'token_hash') == token_hash
    and redis.call('HGET', agent_key, 'status') == 'ACTIVE'
    and (claimed == '' or claimed == agent_id)
  return agent_id, agent_key, record, ok
end
"""
)
# `current_round_phase`: the run's current round and its phase ('' when none).
_ROUND_PHASE_FN = """
local function current_round_phase(run_key, round_prefix)
  local current = redis.call('HGET', run_key, 'current_round') or '0'
  if tonumber(current) == 0 then return current, '' end
  return current, redis.call('HGET', round_prefix .. current, 'phase') or ''
end
"""

# KEYS: tokens. ARGV: token hash, agent key prefix. The agent a token belongs to and its
# record (HGETALL's flat list), or nothing: every agent RPC starts here, so one round trip.
_CALLER_LUA = (
    _CALLER_FN
    + """
local agent_id, agent_key = caller(KEYS[1], ARGV[1], ARGV[2])
if not agent_id then return {} end
return {agent_id, redis.call('HGETALL', agent_key)}
"""
)

# KEYS: agent hash, run hash. ARGV: now_ms, round key prefix. Record a heartbeat and read the
# current round and its phase ('' when none) in one round trip.
_HEARTBEAT_LUA = (
    _ROUND_PHASE_FN
    + """
redis.call('HSET', KEYS[1], 'last_heartbeat_ms', ARGV[1])
local current, phase = current_round_phase(KEYS[2], ARGV[2])
return {current, phase}
"""
)

# KEYS: tokens, run hash. ARGV: token hash, agent key prefix, now_ms, the agent_id claimed
# ('': the token's own), round key prefix. The Heartbeat RPC in one round trip: the token's
# agent and record, as _CALLER_LUA; only if the token is the agent's, the agent ACTIVE and
# the one claimed, the heartbeat is recorded and the current round and its phase follow.
_CALLER_HEARTBEAT_LUA = (
    _CHECKED_CALLER_FN
    + _ROUND_PHASE_FN
    + """
local agent_id, agent_key, record, ok = checked_caller(KEYS[1], ARGV[1], ARGV[2], ARGV[4])
if not agent_id then return {} end
if not ok then return {agent_id, record} end
redis.call('HSET', agent_key, 'last_heartbeat_ms', ARGV[3])
local current, phase = current_round_phase(KEYS[2], ARGV[5])
return {agent_id, record, current, phase}
"""
)

# KEYS: tokens, round hash, round agents hash, events stream. ARGV: token hash, agent key
# prefix, the agent_id claimed ('': the token's own), round number, now_ms, the round's alloc
# and requests key prefixes (the agent's keys: prefix .. agent_id). GetAllocation in one
# round trip: the caller as _CALLER_HEARTBEAT_LUA checks it; only for that caller, what
# allocation_view reads and, when the round has the agent past OPEN, what mark_training
# writes.
_CALLER_ALLOCATION_LUA = (
    _CHECKED_CALLER_FN
    + """
local agent_id, _, record, ok = checked_caller(KEYS[1], ARGV[1], ARGV[2], ARGV[3])
if not agent_id then return {} end
if not ok then return {agent_id, record} end
local round = redis.call('HMGET', KEYS[2], 'phase', 'deadline_ms')
local state = redis.call('HGET', KEYS[3], agent_id)
local alloc = redis.call('HGETALL', ARGV[6] .. agent_id)
local requests = redis.call('LRANGE', ARGV[7] .. agent_id, 0, -1)
if round[1] and round[1] ~= 'OPEN' and state then
  if state == 'ALLOCATED' then redis.call('HSET', KEYS[3], agent_id, 'TRAINING') end
  if round[1] == 'ALLOCATED' then
    redis.call('HSET', KEYS[2], 'phase', 'TRAINING')
    redis.call('XADD', KEYS[4], '*', 'round', ARGV[4], 'phase', 'TRAINING', 'ts_ms', ARGV[5])
  end
end
return {agent_id, record, round[1] or '', round[2] or '', state or '', alloc, requests}
"""
)

# KEYS: round agents hash. ARGV: agent IDs. Those still ALLOCATED or TRAINING become LOST.
_MARK_LOST_LUA = """
local marked = 0
for i = 1, #ARGV do
  local state = redis.call('HGET', KEYS[1], ARGV[i])
  if state == 'ALLOCATED' or state == 'TRAINING' then
    redis.call('HSET', KEYS[1], ARGV[i], 'LOST')
    marked = marked + 1
  end
end
return marked
"""

# ARGV: agent key prefix, cutoff_ms, agent IDs. The agents whose last heartbeat is older than
# the cutoff (or missing), in the order given: the round driver asks every tick.
_SILENT_AGENTS_LUA = """
local silent = {}
local cutoff = tonumber(ARGV[2])
for i = 3, #ARGV do
  local beat = redis.call('HGET', ARGV[1] .. ARGV[i], 'last_heartbeat_ms')
  if (tonumber(beat or '0') or 0) < cutoff then silent[#silent + 1] = ARGV[i] end
end
return silent
"""

# KEYS: round hash, round agents hash, events stream. ARGV: round, now_ms.
# Participants that have not reported become LATE (LOST ones stay LOST); the round moves to
# REPORTED.
_CLOSE_REPORTING_LUA = """
local phase = redis.call('HGET', KEYS[1], 'phase')
if phase ~= 'ALLOCATED' and phase ~= 'TRAINING' then return 0 end
local members = redis.call('HGETALL', KEYS[2])
for i = 1, #members, 2 do
  local state = members[i + 1]
  if state ~= 'REPORTED' and state ~= 'LOST' then
    redis.call('HSET', KEYS[2], members[i], 'LATE')
  end
end
redis.call('HSET', KEYS[1], 'phase', 'REPORTED')
redis.call('XADD', KEYS[3], '*', 'round', ARGV[1], 'phase', 'REPORTED', 'ts_ms', ARGV[2])
return 1
"""

# KEYS: run hash, events stream. ARGV: last round, now_ms. Once per run.
_FINISH_RUN_LUA = """
if redis.call('HSETNX', KEYS[1], 'finished_ms', ARGV[2]) == 0 then return 0 end
redis.call('XADD', KEYS[2], '*', 'round', ARGV[1], 'phase', 'CLOSED', 'ts_ms', ARGV[2],
           'finished', '1')
return 1
"""


# KEYS: alloc hash, stats hash, round hash, round agents hash.
# ARGV: agent_id, require_open (0/1), concatenated sample IDs, concatenated payloads, and
# their lengths "id_len,payload_len,..." (three arguments however long the report: packing
# one argument per sample costs more client time than the whole script).
# All or nothing: refuses (writing nothing) if the round is closed or the agent LATE (when
# require_open), or if any sample is not allocated; else HSETNX each sample (idempotent).
_APPLY_REPORT_LUA = """
if ARGV[2] == '1' then
  local phase = redis.call('HGET', KEYS[3], 'phase')
  if phase ~= 'ALLOCATED' and phase ~= 'TRAINING' then return {'closed', phase or ''} end
  local state = redis.call('HGET', KEYS[4], ARGV[1])
  if state == 'LATE' or state == 'LOST' then return {'late', state} end
end
local ids, payloads = {}, {}
local id_at, payload_at, expect_id = 1, 1, true
for length in string.gmatch(ARGV[5], '%d+') do
  local n = tonumber(length)
  if expect_id then
    ids[#ids + 1] = string.sub(ARGV[3], id_at, id_at + n - 1)
    id_at = id_at + n
  else
    payloads[#payloads + 1] = string.sub(ARGV[4], payload_at, payload_at + n - 1)
    payload_at = payload_at + n
  end
  expect_id = not expect_id
end
local missing = {}
local count = 0
for i = 1, #ids do
  if redis.call('HEXISTS', KEYS[1], ids[i]) == 0 then
    count = count + 1
    if count <= 10 then missing[#missing + 1] = ids[i] end
  end
end
if count > 0 then
  local reply = {'missing', count}
  for _, id in ipairs(missing) do reply[#reply + 1] = id end
  return reply
end
local accepted = 0
for i = 1, #ids do
  accepted = accepted + redis.call('HSETNX', KEYS[2], ids[i], payloads[i])
end
redis.call('HSET', KEYS[4], ARGV[1], 'REPORTED')
return {'ok', accepted}
"""


# KEYS: invites, invite_secrets, agent_names, agents (zset), tokens, run.
# ARGV: secret_hash, name, now_ms, open_enrollment (0/1), new agent_id, new token hash,
# new invitation_id, key prefix, model_description, tokenizer_name, domain_tags (JSON),
# capacity.
# Every check comes before the first write, so the script leaves a whole agent or nothing.
# A secret that already registered an agent re-issues that agent's token (a retried call).
_REGISTER_LUA = """
local invitation_id = redis.call('HGET', KEYS[2], ARGV[1])
local invitation
if invitation_id then invitation = cjson.decode(redis.call('HGET', KEYS[1], invitation_id)) end
if not invitation then
  if ARGV[4] ~= '1' then return {'unknown'} end
  invitation_id = ARGV[7]
  invitation = {name = ARGV[2], secret_hash = ARGV[1], created_ms = tonumber(ARGV[3]),
                expires_ms = 0, agent_id = '', used_ms = 0, revoked_ms = 0, open = true}
end
if invitation.name ~= ARGV[2] then return {'other_name', invitation.name} end
if invitation.agent_id ~= '' then
  local agent_key = ARGV[8] .. 'agent:' .. invitation.agent_id
  local status = redis.call('HGET', agent_key, 'status')
  if status ~= 'ACTIVE' then return {'inactive', invitation.agent_id, status or ''} end
  redis.call('HDEL', KEYS[5], redis.call('HGET', agent_key, 'token_hash'))
  redis.call('HSET', KEYS[5], ARGV[6], invitation.agent_id)
  redis.call('HSET', agent_key, 'token_hash', ARGV[6], 'last_heartbeat_ms', ARGV[3])
  return {'resumed', invitation.agent_id, redis.call('HGET', agent_key, 'first_round')}
end
if invitation.revoked_ms > 0 then return {'revoked', invitation.name} end
if invitation.expires_ms > 0 and tonumber(ARGV[3]) >= invitation.expires_ms then
  return {'expired', invitation.name, tostring(invitation.expires_ms)}
end
if redis.call('HEXISTS', KEYS[3], ARGV[2]) == 1 then return {'taken'} end
local current = tonumber(redis.call('HGET', KEYS[6], 'current_round') or '0')
local total = tonumber(redis.call('HGET', KEYS[6], 'total_rounds') or '0')
if redis.call('HEXISTS', KEYS[6], 'finished_ms') == 1 or (total > 0 and current + 1 > total) then
  return {'run_over', tostring(current), tostring(total)}
end
local agent_id = ARGV[5]
redis.call('HSET', ARGV[8] .. 'agent:' .. agent_id,
  'name', ARGV[2], 'model_description', ARGV[9], 'tokenizer_name', ARGV[10],
  'domain_tags', ARGV[11], 'capacity', ARGV[12], 'first_round', current + 1,
  'status', 'ACTIVE', 'token_hash', ARGV[6], 'last_heartbeat_ms', ARGV[3])
redis.call('ZADD', KEYS[4], redis.call('ZCARD', KEYS[4]), agent_id)
redis.call('HSET', KEYS[3], ARGV[2], agent_id)
redis.call('HSET', KEYS[5], ARGV[6], agent_id)
invitation.agent_id = agent_id
invitation.used_ms = tonumber(ARGV[3])
redis.call('HSET', KEYS[1], invitation_id, cjson.encode(invitation))
redis.call('HSET', KEYS[2], ARGV[1], invitation_id)
return {'registered', agent_id, tostring(current + 1)}
"""

# KEYS: invites. ARGV: invitation_id, now_ms. Revoke an unused invitation.
_REVOKE_INVITATION_LUA = """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return 'missing' end
local invitation = cjson.decode(raw)
if invitation.agent_id ~= '' then return 'used' end
if invitation.revoked_ms == 0 then
  invitation.revoked_ms = tonumber(ARGV[2])
  redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(invitation))
end
return 'ok'
"""

# KEYS: contrib hash, per-agent count hash, round hash. ARGV: agent_id, cap, paths already
# rejected as incorrect, as unsound, then sample_id, text pairs. A path for a sample the
# agent already contributed replaces it; new ones are recorded while the agent is under its
# cap. The round's counters take every outcome. Returns {accepted, over_cap}.
_ADD_CONTRIBUTIONS_LUA = """
local count = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
local cap = tonumber(ARGV[2])
local accepted, over = 0, 0
for i = 5, #ARGV, 2 do
  local field = ARGV[1] .. '|' .. ARGV[i]
  if redis.call('HEXISTS', KEYS[1], field) == 1 then
    redis.call('HSET', KEYS[1], field, ARGV[i + 1])
    accepted = accepted + 1
  elseif count < cap then
    redis.call('HSET', KEYS[1], field, ARGV[i + 1])
    count = count + 1
    accepted = accepted + 1
  else
    over = over + 1
  end
end
redis.call('HSET', KEYS[2], ARGV[1], count)
redis.call('HINCRBY', KEYS[3], 'contrib_accepted', accepted)
redis.call('HINCRBY', KEYS[3], 'contrib_rejected_over_cap', over)
redis.call('HINCRBY', KEYS[3], 'contrib_rejected_incorrect', ARGV[3])
redis.call('HINCRBY', KEYS[3], 'contrib_rejected_unsound', ARGV[4])
return {accepted, over}
"""

CONTRIBUTION_COUNTERS = ("accepted", "rejected_incorrect", "rejected_unsound", "rejected_over_cap")
INVITATION_SECRET_PREFIX = "lada-inv-"
MIN_OPEN_ENROLLMENT_SECRET = 16


def now_ms() -> int:
    return int(time.time() * 1000)


def hash_token(token: str) -> str:
    """Tokens are stored only as SHA-256 hashes."""
    return hashlib.sha256(token.encode()).hexdigest()


class StateError(Exception):
    """Base for state-store refusals; services map subclasses to gRPC status codes."""


class NotFound(StateError):
    pass


class Conflict(StateError):
    """The request contradicts stored state (FAILED_PRECONDITION)."""


class PermissionDenied(StateError):
    pass


class Unauthenticated(StateError):
    pass


class InvalidArgument(StateError):
    """A request field is malformed (INVALID_ARGUMENT); the message names the field."""


class AlreadyExists(StateError):
    """Something of that name exists already (ALREADY_EXISTS)."""


class RunOver(StateError):
    """The run has no round left for the request (OUT_OF_RANGE)."""


class InvitationState(StrEnum):
    PENDING = "PENDING"
    USED = "USED"
    EXPIRED = "EXPIRED"
    REVOKED = "REVOKED"


@dataclass
class InvitationRecord:
    """An invitation as operators see it (its secret is never stored, only its hash)."""

    invitation_id: str
    name: str
    created_ms: int
    expires_ms: int
    agent_id: str
    revoked_ms: int
    open_enrollment: bool

    def state(self, at_ms: int) -> InvitationState:
        if self.agent_id:
            return InvitationState.USED
        if self.revoked_ms:
            return InvitationState.REVOKED
        if self.expires_ms and at_ms >= self.expires_ms:
            return InvitationState.EXPIRED
        return InvitationState.PENDING


@dataclass
class Enrollment:
    """The outcome of a registration: the agent, its fresh token, and whether the secret
    had registered it before (a retried call)."""

    record: AgentRecord
    token: str
    resumed: bool


@dataclass
class AgentRecord:
    agent_id: str
    name: str
    model_description: str = ""
    tokenizer_name: str = ""
    domain_tags: list[str] = field(default_factory=list)
    capacity: int = 0
    first_round: int = 1
    status: AgentStatus = AgentStatus.ACTIVE
    last_heartbeat_ms: int = 0


@dataclass
class RoundRecord:
    round: int
    phase: Phase
    deadline_ms: int
    opened_ms: int
    closed_ms: int
    agents: dict[str, AgentRoundState]


@dataclass
class Allocation:
    sample_id: str
    cluster: int
    version: str
    scan_only: bool = False  # a gap scan: scored and reported, not trained on


# What GetAllocation reads of a round for one agent: the round's phase and deadline, the
# agent's state in it, its allocation and its contribution requests.
AllocationRead = tuple[Phase | None, int, AgentRoundState | None, list[Allocation], list[str]]


@dataclass
class ReportOutcome:
    accepted: int
    duplicates: int


def _agent_record(agent_id: str, raw: dict[str, str]) -> AgentRecord:
    return AgentRecord(
        agent_id=agent_id,
        name=raw["name"],
        model_description=raw["model_description"],
        tokenizer_name=raw["tokenizer_name"],
        domain_tags=json.loads(raw["domain_tags"]),
        capacity=int(raw["capacity"]),
        first_round=int(raw["first_round"]),
        status=AgentStatus(raw["status"]),
        last_heartbeat_ms=int(raw["last_heartbeat_ms"]),
    )


def _checked_agent(agent_id: str, raw: dict[str, str], token_hash: str) -> AgentRecord:
    """The agent's record if `token_hash` is its token's and it is active; else refused."""
    stored = raw.get("token_hash", "")
    if not stored or not token_hash or not secrets.compare_digest(stored, token_hash):
        raise Unauthenticated("authorization: missing or wrong agent token")
    record = _agent_record(agent_id, raw)
    if record.status is not AgentStatus.ACTIVE:
        raise Unauthenticated(f"agent_id: agent {agent_id!r} is {record.status.value}")
    return record


def _caller_record(reply: list[Any], token_hash: str) -> AgentRecord:
    """The checked record from a _CALLER_LUA-shaped reply: [agent_id, HGETALL list, ...]."""
    if not reply:
        raise Unauthenticated("authorization: missing or unknown agent token")
    flat = reply[1]
    raw = {_s(flat[i]): _s(flat[i + 1]) for i in range(0, len(flat), 2)}
    return _checked_agent(_s(reply[0]), raw, token_hash)


def _allocation_meta(allocation: Allocation, pos: int) -> dict[str, Any]:
    """The stored value of one allocated sample; `scan` only when set, so allocations without
    gap scans are stored as before."""
    meta: dict[str, Any] = {"cluster": allocation.cluster, "version": allocation.version}
    if allocation.scan_only:
        meta["scan"] = 1
    meta["pos"] = pos
    return meta


def _allocation_rows(raw: Mapping[bytes, bytes]) -> list[Allocation]:
    rows = sorted(((json.loads(v), _s(k)) for k, v in raw.items()), key=lambda r: r[0]["pos"])
    return [
        Allocation(sample_id, meta["cluster"], meta["version"], bool(meta.get("scan")))
        for meta, sample_id in rows
    ]


def _s(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else value


class StateStore:
    """Typed access to one run's state in Redis; nothing outside this class builds keys."""

    def __init__(self, client: redis.Redis, run_id: str = "default") -> None:
        self.redis = client
        self.run_id = run_id
        self.prefix = f"{KEY_ROOT}:{run_id}:"
        self._transition = client.register_script(_TRANSITION_LUA)
        self._open_round = client.register_script(_OPEN_ROUND_LUA)
        self._lease = client.register_script(_LEASE_LUA)
        self._mark_training = client.register_script(_MARK_TRAINING_LUA)
        self._caller = client.register_script(_CALLER_LUA)
        self._heartbeat = client.register_script(_HEARTBEAT_LUA)
        self._caller_heartbeat = client.register_script(_CALLER_HEARTBEAT_LUA)
        self._caller_allocation = client.register_script(_CALLER_ALLOCATION_LUA)
        self._silent_agents = client.register_script(_SILENT_AGENTS_LUA)
        self._close_reporting = client.register_script(_CLOSE_REPORTING_LUA)
        self._mark_lost = client.register_script(_MARK_LOST_LUA)
        self._finish_run = client.register_script(_FINISH_RUN_LUA)
        self._apply_report = client.register_script(_APPLY_REPORT_LUA)
        self._register = client.register_script(_REGISTER_LUA)
        self._revoke_invitation = client.register_script(_REVOKE_INVITATION_LUA)
        self._add_contributions = client.register_script(_ADD_CONTRIBUTIONS_LUA)

    # ---- keys ----------------------------------------------------------------------
    def key(self, *parts: object) -> str:
        return self.prefix + ":".join(str(p) for p in parts)

    def _key_prefix(self, kind: str) -> str:
        """What `key(kind, x)` puts before x, for Lua scripts that build such keys."""
        return self.key(kind, "")

    def all_keys(self) -> list[str]:
        """Every key of this run (for tests, wipes and state snapshots)."""
        return sorted(_s(k) for k in self.redis.scan_iter(match=self.prefix + "*", count=1000))

    def snapshot(self) -> dict[str, object]:
        """A comparable dump of the run's state (stream IDs excluded: they carry times;
        leases excluded: they come and go with the replicas, not with requests)."""
        dump: dict[str, object] = {}
        for key in self.all_keys():
            if key.startswith(self.key("lock")):
                continue
            kind = _s(self.redis.type(key))
            if kind == "hash":
                dump[key] = {_s(k): v for k, v in self.redis.hgetall(key).items()}
            elif kind == "set":
                dump[key] = sorted(self.redis.smembers(key))
            elif kind == "zset":
                dump[key] = self.redis.zrange(key, 0, -1, withscores=True)
            elif kind == "string":
                dump[key] = self.redis.get(key)
            elif kind == "stream":
                dump[key] = [fields for _, fields in self.redis.xrange(key)]
            elif kind == "list":
                dump[key] = self.redis.lrange(key, 0, -1)
        return dump

    def wipe(self) -> None:
        keys = self.all_keys()
        if keys:
            self.redis.delete(*keys)

    # ---- run -----------------------------------------------------------------------
    def init_run(
        self, *, policy: str, total_rounds: int, pool_fingerprint: str, pool_size: int
    ) -> dict[str, str]:
        """Create the run record once; a restart with the same pool keeps the stored one."""
        run_key = self.key("run")
        self.redis.hsetnx(run_key, "created_ms", now_ms())
        self.redis.hsetnx(run_key, "current_round", 0)
        self.redis.hsetnx(run_key, "total_rounds", total_rounds)  # then only SetTotalRounds
        existing = self.run_info()
        stored = existing.get("pool_fingerprint")
        if stored and stored != pool_fingerprint:
            raise Conflict(
                f"pool_fingerprint: run {self.run_id!r} was created with pool "
                f"{stored[:12]}, not {pool_fingerprint[:12]}"
            )
        self.redis.hset(
            run_key,
            mapping={
                "policy": policy,
                "pool_fingerprint": pool_fingerprint,
                "pool_size": pool_size,
            },
        )
        return self.run_info()

    def run_info(self) -> dict[str, str]:
        return {_s(k): _s(v) for k, v in self.redis.hgetall(self.key("run")).items()}

    def current_round(self) -> int:
        return int(_s(self.redis.hget(self.key("run"), "current_round")) or 0)

    def total_rounds(self, default: int = 0) -> int:
        """Rounds planned for the run (0: until stopped; `default` when none is stored)."""
        stored = _s(self.redis.hget(self.key("run"), "total_rounds"))
        return int(stored) if stored else default

    def set_total_rounds(self, total: int) -> int:
        """Extend or shorten the run; never below the current round, never after it ended."""
        run_key = self.key("run")
        with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(run_key)
                    if pipe.hexists(run_key, "finished_ms"):
                        raise Conflict("total_rounds: the run has finished; start a new run")
                    current = int(_s(pipe.hget(run_key, "current_round")) or 0)
                    if total and total < current:
                        raise InvalidArgument(
                            f"total_rounds: {total} is below the current round {current}"
                        )
                    pipe.multi()
                    pipe.hset(run_key, "total_rounds", total)
                    pipe.execute()
                    return current
                except redis.WatchError:
                    continue

    # ---- registry ------------------------------------------------------------------
    def register_agent(
        self, record: AgentRecord, enrollment_secret: str, *, open_enrollment: bool = False
    ) -> Enrollment:
        """Register an agent with an invitation's secret, atomically (one Lua script).

        The same secret again returns the same agent with a fresh token, so a lost reply
        never locks an organisation out. With `open_enrollment`, a secret no invitation
        holds becomes the agent's own invitation for `record.name`.
        """
        if not enrollment_secret:
            raise Unauthenticated(
                "enrollment_secret: required (an operator issues one: lada agent invite NAME)"
            )
        if open_enrollment and len(enrollment_secret) < MIN_OPEN_ENROLLMENT_SECRET:
            raise InvalidArgument(
                f"enrollment_secret: at least {MIN_OPEN_ENROLLMENT_SECRET} characters"
            )
        token = secrets.token_urlsafe(32)
        agent_id = "agent-" + secrets.token_hex(6)
        stamp = now_ms()
        reply = self._register(
            keys=[
                self.key("invites"),
                self.key("invite_secrets"),
                self.key("agent_names"),
                self.key("agents"),
                self.key("tokens"),
                self.key("run"),
            ],
            args=[
                hash_token(enrollment_secret),
                record.name,
                stamp,
                int(open_enrollment),
                agent_id,
                hash_token(token),
                "inv-" + secrets.token_hex(6),
                self.prefix,
                record.model_description,
                record.tokenizer_name,
                json.dumps(record.domain_tags),
                record.capacity,
            ],
        )
        verdict = _s(reply[0])
        if verdict in ("registered", "resumed"):
            return Enrollment(self.get_agent(_s(reply[1])), token, verdict == "resumed")
        parts = [_s(part) for part in reply[1:]]
        if verdict == "run_over":
            current, total = int(parts[0]), int(parts[1])
            phase = self.round_phase(current) if current else None
            state = "finished" if self.run_finished() else f"round {current} is {phase}"
            raise RunOver(
                f"round: the run has no round left for a new agent: {state}, last round "
                f"{total} (an operator can extend it: lada run extend --rounds N)"
            )
        raise _enrollment_refusal(verdict, parts, record.name)

    # ---- invitations ---------------------------------------------------------------
    def create_invitation(self, name: str, expires_ms: int = 0) -> tuple[str, str]:
        """A new invitation for `name`; returns (invitation_id, secret). Only the secret's
        hash is stored."""
        secret = INVITATION_SECRET_PREFIX + secrets.token_urlsafe(24)
        invitation_id = "inv-" + secrets.token_hex(6)
        entry = {
            "name": name,
            "secret_hash": hash_token(secret),
            "created_ms": now_ms(),
            "expires_ms": expires_ms,
            "agent_id": "",
            "used_ms": 0,
            "revoked_ms": 0,
            "open": False,
        }
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(self.key("invites"), invitation_id, json.dumps(entry))
        pipe.hset(self.key("invite_secrets"), entry["secret_hash"], invitation_id)
        pipe.execute()
        return invitation_id, secret

    def invitations(self) -> list[InvitationRecord]:
        """Every invitation of the run, oldest first."""
        rows = []
        for invitation_id, raw in self.redis.hgetall(self.key("invites")).items():
            entry = json.loads(raw)
            rows.append(
                InvitationRecord(
                    _s(invitation_id),
                    entry["name"],
                    int(entry["created_ms"]),
                    int(entry["expires_ms"]),
                    entry["agent_id"],
                    int(entry["revoked_ms"]),
                    bool(entry.get("open")),
                )
            )
        return sorted(rows, key=lambda row: (row.created_ms, row.invitation_id))

    def revoke_invitation(self, invitation_id: str) -> None:
        """Revoke an unused invitation (revoking twice is a no-op)."""
        verdict = _s(
            self._revoke_invitation(keys=[self.key("invites")], args=[invitation_id, now_ms()])
        )
        if verdict == "missing":
            raise NotFound(f"invitation_id: no invitation {invitation_id!r}")
        if verdict == "used":
            raise Conflict(
                f"invitation_id: {invitation_id} was used already; revoke the agent instead"
            )

    def agent_id_by_name(self, name: str) -> str | None:
        found = self.redis.hget(self.key("agent_names"), name)
        return _s(found) or None

    def get_agent(self, agent_id: str) -> AgentRecord:
        raw = {_s(k): _s(v) for k, v in self.redis.hgetall(self.key("agent", agent_id)).items()}
        if not raw:
            raise NotFound(f"agent_id: no agent {agent_id!r}")
        return _agent_record(agent_id, raw)

    def list_agents(self) -> list[AgentRecord]:
        """Every agent in registration order; two round trips however many there are (the
        round driver asks every tick while it waits for agents)."""
        ids = [_s(a) for a in self.redis.zrange(self.key("agents"), 0, -1)]
        pipe = self.redis.pipeline(transaction=False)
        for agent_id in ids:
            pipe.hgetall(self.key("agent", agent_id))
        records = []
        for agent_id, raw in zip(ids, pipe.execute(), strict=True):
            if not raw:
                raise NotFound(f"agent_id: no agent {agent_id!r}")
            records.append(_agent_record(agent_id, {_s(k): _s(v) for k, v in raw.items()}))
        return records

    def active_agents(self, for_round: int) -> list[AgentRecord]:
        """Agents that take part in `for_round` (active, joined at or before it)."""
        return [
            a
            for a in self.list_agents()
            if a.status is AgentStatus.ACTIVE and a.first_round <= for_round
        ]

    def authenticate(self, agent_id: str, token: str) -> AgentRecord:
        """Check an agent's token; revoked or deregistered agents are refused."""
        raw = {_s(k): _s(v) for k, v in self.redis.hgetall(self.key("agent", agent_id)).items()}
        return _checked_agent(agent_id, raw, hash_token(token) if token else "")

    def caller(self, token: str) -> AgentRecord:
        """The agent a token belongs to, checked as `authenticate` checks it, in one round
        trip (it runs on every agent RPC): an unknown token, or a revoked or deregistered
        agent, is Unauthenticated. Nothing is cached, so a revocation counts at once."""
        if not token:
            raise Unauthenticated("authorization: missing or unknown agent token")
        token_hash = hash_token(token)
        reply = self._caller(
            keys=[self.key("tokens")], args=[token_hash, self._key_prefix("agent")]
        )
        return _caller_record(reply, token_hash)

    def caller_heartbeat(
        self, token: str, agent_id: str
    ) -> tuple[AgentRecord, tuple[int, int, Phase | None] | None]:
        """`caller(token)` and, when the caller is `agent_id` (or `agent_id` is empty), its
        heartbeat with the current round and phase as `heartbeat_and_round` returns them,
        all in one round trip (every agent sends one each interval). (record, None): the
        token belongs to another agent than `agent_id`, and nothing was written."""
        if not token:
            raise Unauthenticated("authorization: missing or unknown agent token")
        token_hash = hash_token(token)
        stamp = now_ms()
        reply = self._caller_heartbeat(
            keys=[self.key("tokens"), self.key("run")],
            args=[
                token_hash,
                self._key_prefix("agent"),
                stamp,
                agent_id,
                self._key_prefix("round"),
            ],
        )
        record = _caller_record(reply, token_hash)
        if len(reply) < 4:
            return record, None
        current = int(_s(reply[2]) or 0)
        phase = _s(reply[3])
        return record, (stamp, current, Phase(phase) if current and phase else None)

    def set_agent_status(self, agent_id: str, status: AgentStatus) -> None:
        self.get_agent(agent_id)
        self.redis.hset(self.key("agent", agent_id), "status", status.value)

    def silent_agents(self, agent_ids: list[str], since_ms: int) -> list[str]:
        """Those of `agent_ids` with no heartbeat since `since_ms` (Unix ms), in order; one
        round trip and a short reply, however many agents are asked about."""
        if not agent_ids:
            return []
        silent = self._silent_agents(
            keys=[], args=[self._key_prefix("agent"), since_ms, *agent_ids]
        )
        return [_s(a) for a in silent]

    def heartbeat(self, agent_id: str) -> int:
        stamp = now_ms()
        self.redis.hset(self.key("agent", agent_id), "last_heartbeat_ms", stamp)
        return stamp

    def heartbeat_and_round(self, agent_id: str) -> tuple[int, int, Phase | None]:
        """Record a heartbeat and read the current round and its phase: (stamp, round,
        phase) in one round trip, as every agent sends one each interval."""
        stamp = now_ms()
        current, phase = self._heartbeat(
            keys=[self.key("agent", agent_id), self.key("run")],
            args=[stamp, self._key_prefix("round")],
        )
        current_round = int(_s(current) or 0)
        return stamp, current_round, Phase(_s(phase)) if current_round and phase else None

    # ---- rounds --------------------------------------------------------------------
    def open_round(self, round_number: int, deadline_ms: int) -> bool:
        """Open round r if r-1 is the current round; False when another replica did."""
        if round_number > 1 and self.round_phase(round_number - 1) is not Phase.CLOSED:
            return False
        opened = self._open_round(
            keys=[self.key("run"), self.key("round", round_number), self.key("events")],
            args=[round_number, now_ms(), deadline_ms],
        )
        return bool(opened)

    def transition(self, round_number: int, to: Phase) -> bool:
        """Atomically move a round to `to` if its current phase allows it."""
        allowed_from = [p.value for p, targets in ALLOWED_TRANSITIONS.items() if to in targets]
        moved, _previous = self._transition(
            keys=[self.key("round", round_number), self.key("events"), self.key("run")],
            args=[round_number, ",".join(allowed_from), to.value, now_ms()],
        )
        return bool(moved)

    def round_phase(self, round_number: int) -> Phase | None:
        phase = _s(self.redis.hget(self.key("round", round_number), "phase"))
        return Phase(phase) if phase else None

    def get_round(self, round_number: int) -> RoundRecord:
        raw = {_s(k): _s(v) for k, v in self.redis.hgetall(self.key("round", round_number)).items()}
        if not raw:
            raise NotFound(f"round: no round {round_number}")
        agents = {
            _s(k): AgentRoundState(_s(v))
            for k, v in self.redis.hgetall(self.key("round", round_number, "agents")).items()
        }
        return RoundRecord(
            round_number,
            Phase(raw["phase"]),
            int(raw.get("deadline_ms") or 0),
            int(raw.get("opened_ms") or 0),
            int(raw.get("closed_ms") or 0),
            agents,
        )

    def set_agent_round_state(
        self, round_number: int, agent_id: str, state: AgentRoundState
    ) -> None:
        self.redis.hset(self.key("round", round_number, "agents"), agent_id, state.value)

    def participant_count(self, round_number: int) -> int:
        """How many agents take part in a round (any state)."""
        return int(self.redis.hlen(self.key("round", round_number, "agents")))

    def agent_round_state(self, round_number: int, agent_id: str) -> AgentRoundState | None:
        value = _s(self.redis.hget(self.key("round", round_number, "agents"), agent_id))
        return AgentRoundState(value) if value else None

    def events(
        self, after_id: str = "0-0", block_ms: int | None = None, count: int = 100
    ) -> list[tuple[str, dict[str, str]]]:
        """Round events after a stream ID; blocks up to `block_ms` when given."""
        reply = self.redis.xread({self.key("events"): after_id}, count=count, block=block_ms)
        out: list[tuple[str, dict[str, str]]] = []
        for _stream, entries in reply or []:
            for entry_id, fields in entries:
                out.append((_s(entry_id), {_s(k): _s(v) for k, v in fields.items()}))
        return out

    # ---- allocations ---------------------------------------------------------------
    def record_allocations(
        self, round_number: int, allocations: Mapping[str, list[Allocation]]
    ) -> None:
        """Write every agent's allocation for a round in one transaction (all or nothing)."""
        pipe = self.redis.pipeline(transaction=True)
        self._queue_allocations(pipe, round_number, allocations)
        pipe.execute()

    def get_allocation(self, round_number: int, agent_id: str) -> list[Allocation]:
        return _allocation_rows(self.redis.hgetall(self.key("alloc", round_number, agent_id)))

    def allocation_view(self, round_number: int, agent_id: str) -> AllocationRead:
        """What GetAllocation reads, in one round trip: the round's phase and deadline, the
        agent's state in it, its allocation (not the whole round: it has every agent) and
        its contribution requests."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.hmget(self.key("round", round_number), "phase", "deadline_ms")
        pipe.hget(self.key("round", round_number, "agents"), agent_id)
        pipe.hgetall(self.key("alloc", round_number, agent_id))
        pipe.lrange(self.key("requests", round_number, agent_id), 0, -1)
        (phase, deadline), state, raw, requests = pipe.execute()
        return (
            Phase(_s(phase)) if phase else None,
            int(_s(deadline) or 0),
            AgentRoundState(_s(state)) if state else None,
            _allocation_rows(raw),
            [_s(s) for s in requests],
        )

    def caller_allocation(
        self, token: str, agent_id: str, round_number: int
    ) -> tuple[AgentRecord, AllocationRead | None]:
        """`caller(token)` and, when the caller is `agent_id` (or `agent_id` is empty), what
        allocation_view reads of round `round_number` (> 0) with mark_training applied when
        the round has the agent and is past OPEN, all in one round trip (every agent fetches
        once a round). (record, None): the token belongs to another agent than `agent_id`,
        and nothing was read or written."""
        if not token:
            raise Unauthenticated("authorization: missing or unknown agent token")
        token_hash = hash_token(token)
        reply = self._caller_allocation(
            keys=[
                self.key("tokens"),
                self.key("round", round_number),
                self.key("round", round_number, "agents"),
                self.key("events"),
            ],
            args=[
                token_hash,
                self._key_prefix("agent"),
                agent_id,
                round_number,
                now_ms(),
                self.key("alloc", round_number, ""),
                self.key("requests", round_number, ""),
            ],
        )
        record = _caller_record(reply, token_hash)
        if len(reply) < 3:
            return record, None
        phase, deadline, state, raw, requests = reply[2:7]
        flat = {raw[i]: raw[i + 1] for i in range(0, len(raw), 2)}
        return record, (
            Phase(_s(phase)) if _s(phase) else None,
            int(_s(deadline) or 0),
            AgentRoundState(_s(state)) if _s(state) else None,
            _allocation_rows(flat),
            [_s(r) for r in requests],
        )

    def allocation_size(self, round_number: int, agent_id: str) -> int:
        return int(self.redis.hlen(self.key("alloc", round_number, agent_id)))

    def contribution_requests(self, round_number: int, agent_id: str) -> list[str]:
        """Public samples the agent was asked to write paths for in a round, in draw order."""
        key = self.key("requests", round_number, agent_id)
        return [_s(s) for s in self.redis.lrange(key, 0, -1)]

    def contribution_request_count(self, round_number: int, agent_id: str) -> int:
        return int(self.redis.llen(self.key("requests", round_number, agent_id)))

    # ---- statistics ----------------------------------------------------------------
    def apply_report(
        self,
        round_number: int,
        agent_id: str,
        stats: Mapping[str, bytes],
        *,
        require_open: bool = False,
    ) -> ReportOutcome:
        """Apply a whole report stream atomically; idempotent per (agent, round, sample).

        Samples not allocated to the agent in this round raise PermissionDenied and
        nothing is written. With `require_open`, a report for a round that is no longer
        taking reports, or from an agent marked LATE, raises Conflict (checked atomically
        with the write, so it cannot slip past the deadline sweep); for a round that does
        not exist, NotFound.
        """
        encoded_ids = [sample_id.encode() for sample_id in stats]
        payloads = list(stats.values())
        lengths = ",".join(f"{len(i)},{len(p)}" for i, p in zip(encoded_ids, payloads, strict=True))
        args = [agent_id, int(require_open), b"".join(encoded_ids), b"".join(payloads), lengths]
        reply = self._apply_report(
            keys=[
                self.key("alloc", round_number, agent_id),
                self.key("stats", round_number, agent_id),
                self.key("round", round_number),
                self.key("round", round_number, "agents"),
            ],
            args=args,
        )
        verdict = _s(reply[0])
        if verdict == "ok":
            accepted = int(reply[1])
            return ReportOutcome(accepted, len(stats) - accepted)
        if verdict == "missing":
            missing = [_s(m) for m in reply[2:]]
            extra = int(reply[1]) - len(missing)
            raise PermissionDenied(
                f"stats.sample_id: not allocated to {agent_id} in round "
                f"{round_number}: {', '.join(missing)}" + (f" (+{extra} more)" if extra else "")
            )
        if verdict == "late":
            why = "missed the deadline" if _s(reply[1]) == "LATE" else "stopped heartbeating in"
            raise Conflict(f"round: {agent_id} {why} round {round_number} ({_s(reply[1])})")
        if not _s(reply[1]):  # as resolve_round words it: the report names no round
            raise NotFound(f"round: no round {round_number}")
        raise Conflict(f"round: round {round_number} is {_s(reply[1])}, not taking reports")

    def get_stats(self, round_number: int, agent_id: str) -> dict[str, bytes]:
        return {
            _s(k): v
            for k, v in self.redis.hgetall(self.key("stats", round_number, agent_id)).items()
        }

    def get_stats_many(
        self, round_number: int, agent_ids: list[str]
    ) -> dict[str, dict[str, bytes]]:
        """`get_stats` of several agents in one round trip (folding a round reads them all)."""
        pipe = self.redis.pipeline(transaction=False)
        for agent_id in agent_ids:
            pipe.hgetall(self.key("stats", round_number, agent_id))
        return {
            agent_id: {_s(k): v for k, v in raw.items()}
            for agent_id, raw in zip(agent_ids, pipe.execute(), strict=True)
        }

    # ---- contributions and absorption ----------------------------------------------
    def add_contributions(
        self,
        round_number: int,
        agent_id: str,
        paths: Mapping[str, str],
        cap: int,
        rejected: tuple[int, int] = (0, 0),
    ) -> tuple[int, int]:
        """Record paths up to the agent's per-round cap and count the round's outcomes,
        `rejected` being the (incorrect, unsound) paths dropped before; one script call.
        Returns (accepted, over the cap)."""
        args: list[object] = [agent_id, cap, *rejected]
        for sample_id, text in paths.items():
            args += [sample_id, text]
        accepted, over = self._add_contributions(
            keys=[
                self.key("contrib", round_number),
                self.key("contrib", round_number, "counts"),
                self.key("round", round_number),
            ],
            args=args,
        )
        return int(accepted), int(over)

    def contribution_counts(self, round_number: int) -> dict[str, int]:
        """Accepted and rejected contributions of a round (CONTRIBUTION_COUNTERS)."""
        values = self.redis.hmget(
            self.key("round", round_number), [f"contrib_{c}" for c in CONTRIBUTION_COUNTERS]
        )
        return {c: int(_s(v) or 0) for c, v in zip(CONTRIBUTION_COUNTERS, values, strict=True)}

    def contributions(self, round_number: int) -> Iterator[tuple[str, str, str]]:
        """(agent_id, sample_id, text) for a round's contributions."""
        for field_name, text in self.redis.hgetall(self.key("contrib", round_number)).items():
            agent_id, _, sample_id = _s(field_name).partition("|")
            yield agent_id, sample_id, _s(text)

    def mark_absorbed(self, sample_ids: Iterable[str]) -> None:
        ids = list(sample_ids)
        if ids:
            self.redis.sadd(self.key("absorbed"), *ids)

    def absorbed(self) -> set[str]:
        return {_s(s) for s in self.redis.smembers(self.key("absorbed"))}

    # ---- policy state, blobs and leases --------------------------------------------
    def policy_state(self, name: str) -> dict[str, object]:
        return {
            _s(k): json.loads(v) for k, v in self.redis.hgetall(self.key("policy", name)).items()
        }

    def set_policy_state(self, name: str, values: Mapping[str, object]) -> None:
        if values:
            self.redis.hset(
                self.key("policy", name), mapping={k: json.dumps(v) for k, v in values.items()}
            )

    def put_blob(self, name: str, data: bytes) -> None:
        self.redis.set(self.key("blob", name), data)

    def get_blob(self, name: str) -> bytes | None:
        return self.redis.get(self.key("blob", name))

    def acquire_lease(self, name: str, owner: str, ttl_ms: int) -> bool:
        """Take or renew a named lease (e.g. the round driver's leadership)."""
        return bool(self._lease(keys=[self.key("lock", name)], args=[owner, ttl_ms]))

    # ---- callers, round driving and folding (the allocator's round driver) -------------
    def record_round_allocations(
        self,
        round_number: int,
        allocations: Mapping[str, list[Allocation]],
        deadline_ms: int,
        requests: Mapping[str, list[str]] | None = None,
    ) -> bool:
        """Record a round's allocations and contribution requests and move it OPEN ->
        ALLOCATED in one transaction.

        Returns False (and writes nothing) if the round is not OPEN any more, so two
        replicas can never both dispatch a round.
        """
        round_key = self.key("round", round_number)
        with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(round_key)
                    if _s(pipe.hget(round_key, "phase")) != Phase.OPEN.value:
                        return False
                    stamp = now_ms()
                    pipe.multi()
                    self._queue_allocations(pipe, round_number, allocations)
                    self._queue_requests(pipe, round_number, requests or {})
                    pipe.hset(
                        round_key,
                        mapping={
                            "phase": Phase.ALLOCATED.value,
                            "deadline_ms": deadline_ms,
                            "allocated_ms": stamp,
                        },
                    )
                    pipe.xadd(
                        self.key("events"),
                        {"round": round_number, "phase": Phase.ALLOCATED.value, "ts_ms": stamp},
                    )
                    pipe.execute()
                    return True
                except redis.WatchError:
                    continue

    def _queue_allocations(
        self, pipe: redis.client.Pipeline, r: int, allocations: Mapping[str, list[Allocation]]
    ) -> None:
        for agent_id, samples in allocations.items():
            key = self.key("alloc", r, agent_id)
            pipe.delete(key)
            if samples:
                pipe.hset(
                    key,
                    mapping={
                        a.sample_id: json.dumps(_allocation_meta(a, pos))
                        for pos, a in enumerate(samples)
                    },
                )
            pipe.hset(self.key("round", r, "agents"), agent_id, AgentRoundState.ALLOCATED.value)

    def _queue_requests(
        self, pipe: redis.client.Pipeline, r: int, requests: Mapping[str, list[str]]
    ) -> None:
        """Replace each agent's requests of round r (kept for the run, like its allocation)."""
        for agent_id, sample_ids in requests.items():
            key = self.key("requests", r, agent_id)
            pipe.delete(key)
            if sample_ids:
                pipe.rpush(key, *sample_ids)

    def mark_training(self, round_number: int, agent_id: str, round_too: bool = True) -> None:
        """An agent fetched its allocation: ALLOCATED -> TRAINING for it and for the round
        (`round_too=False`: the caller saw the round past ALLOCATED already); one script."""
        self._mark_training(
            keys=[
                self.key("round", round_number, "agents"),
                self.key("round", round_number),
                self.key("events"),
            ],
            args=[agent_id, round_number, now_ms(), int(round_too)],
        )

    def mark_lost(self, round_number: int, agent_ids: list[str]) -> int:
        """Mark agents that stopped heartbeating LOST for the round, unless they reported
        meanwhile (checked atomically with the write). Returns how many were marked."""
        if not agent_ids:
            return 0
        return int(
            self._mark_lost(keys=[self.key("round", round_number, "agents")], args=agent_ids)
        )

    def close_reporting(self, round_number: int) -> bool:
        """Mark every participant that has not reported LATE and move the round to REPORTED,
        atomically (a report racing the sweep is either in before it or refused after)."""
        moved = self._close_reporting(
            keys=[
                self.key("round", round_number),
                self.key("round", round_number, "agents"),
                self.key("events"),
            ],
            args=[round_number, now_ms()],
        )
        return bool(moved)

    def learners(self) -> dict[str, dict[str, object]]:
        """Per-agent learner state (bandit arms, band) kept in `policy:learners`."""
        state = self.policy_state("learners")
        return {k: v for k, v in state.items() if isinstance(v, dict)}  # type: ignore[misc]

    def round_learners(self, round_number: int) -> dict[str, dict[str, object]]:
        """The learner state each agent folded in `round_number` had right after that fold."""
        raw = self.redis.hgetall(self.key("round", round_number, "learners"))
        return {_s(k): json.loads(_s(v)) for k, v in raw.items()}

    def folded_round(self) -> int:
        return int(self.policy_state("learners").get("folded_round", 0) or 0)  # type: ignore[arg-type]

    def fold_round(
        self,
        round_number: int,
        learners: Mapping[str, object],
        gaps: Mapping[str, Mapping[str, str]],
        llm_acc: Mapping[str, str],
    ) -> bool:
        """Write one round's folded results (learner state, gaps, LLM accuracy) once.

        Returns False when this round was already folded (a restart or another replica).
        """
        policy_key = self.key("policy", "learners")
        with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(policy_key)
                    folded = json.loads(_s(pipe.hget(policy_key, "folded_round")) or "0")
                    if int(folded) >= round_number:
                        return False
                    pipe.multi()
                    encoded = {k: json.dumps(v) for k, v in learners.items()}
                    folded = {"folded_round": json.dumps(round_number)}
                    pipe.hset(policy_key, mapping=encoded | folded)
                    if encoded:
                        pipe.hset(self.key("round", round_number, "learners"), mapping=encoded)
                    for agent_id, values in gaps.items():
                        if values:
                            pipe.hset(self.key("gaps", agent_id), mapping=dict(values))
                    if llm_acc:
                        pipe.hset(self.key("llm_acc"), mapping=dict(llm_acc))
                    pipe.execute()
                    return True
                except redis.WatchError:
                    continue

    def known_gaps(self, agent_id: str) -> dict[str, str]:
        """sample_id -> "gap|solved" for every sample the agent has reported on."""
        return {_s(k): _s(v) for k, v in self.redis.hgetall(self.key("gaps", agent_id)).items()}

    def known_gaps_many(self, agent_ids: list[str]) -> dict[str, dict[str, str]]:
        pipe = self.redis.pipeline(transaction=False)
        for agent_id in agent_ids:
            pipe.hgetall(self.key("gaps", agent_id))
        return {
            agent_id: {_s(k): _s(v) for k, v in raw.items()}
            for agent_id, raw in zip(agent_ids, pipe.execute(), strict=True)
        }

    def llm_accuracy(self) -> dict[str, str]:
        """sample_id -> "correct/total" of the LLM's paths, as agents reported them."""
        return {_s(k): _s(v) for k, v in self.redis.hgetall(self.key("llm_acc")).items()}

    def absorbed_round(self) -> int:
        return int(self.policy_state("learners").get("absorbed_round", 0) or 0)  # type: ignore[arg-type]

    def record_absorption(
        self, round_number: int, sample_ids: Iterable[str], llm_learner: object, version: str
    ) -> None:
        """After the LLM absorbed a round's selection: absorbed IDs, its arms, its version."""
        pipe = self.redis.pipeline(transaction=True)
        ids = list(sample_ids)
        if ids:
            pipe.sadd(self.key("absorbed"), *ids)
        pipe.hset(
            self.key("policy", "learners"),
            mapping={"llm": json.dumps(llm_learner), "absorbed_round": json.dumps(round_number)},
        )
        if version:
            pipe.hset(self.key("run"), "llm_version", version)
        pipe.execute()

    def llm_version(self) -> str:
        return _s(self.redis.hget(self.key("run"), "llm_version")) or BASE_VERSION

    def finish_run(self, last_round: int) -> bool:
        """Mark the run finished once and log a `finished` event for watchers."""
        return bool(
            self._finish_run(
                keys=[self.key("run"), self.key("events")], args=[last_round, now_ms()]
            )
        )

    def run_finished(self) -> bool:
        return bool(self.redis.hexists(self.key("run"), "finished_ms"))

    def put_blob_once(self, name: str, data: bytes) -> bool:
        """Store a blob unless one exists (replicas racing to fit the same artefact)."""
        return bool(self.redis.set(self.key("blob", name), data, nx=True))


def _enrollment_refusal(verdict: str, parts: list[str], name: str) -> StateError:
    """The refusal for a registration the script turned down (nothing was written)."""
    if verdict == "unknown":
        return Unauthenticated("enrollment_secret: no invitation matches this secret")
    if verdict == "other_name":
        return PermissionDenied(f"name: the invitation is for {parts[0]!r}, not {name!r}")
    if verdict == "inactive":
        return PermissionDenied(
            f"enrollment_secret: the agent registered with it ({parts[0]}) is {parts[1]}"
        )
    if verdict == "revoked":
        return Unauthenticated(f"enrollment_secret: the invitation for {parts[0]!r} was revoked")
    if verdict == "expired":
        return Unauthenticated(
            f"enrollment_secret: the invitation for {parts[0]!r} expired at "
            f"{time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(int(parts[1]) / 1000))}"
        )
    return AlreadyExists(f"name: an agent named {name!r} is already registered")


# ---- the LLM service's shared path cache ---------------------------------------------
PATH_CACHE_TTL_S = 7 * 24 * 3600  # an entry lives this long after it was (last) written


class PathCacheStore:
    """Generated paths shared by every LLM-service replica (and restart) on one Redis.

    One string per entry at `lada:pathcache:{model_id}:{version}:{digest}`, where `digest`
    is the sha256 of the entry's other key parts (sample or prompt, sampling) as canonical
    JSON. `model_id` must identify the generating model (weights, backend, dtype), so two
    models never share an entry; `version` the model version's weights (base, or a
    version name plus its adapter's digest). Values are opaque bytes (the caller
    serializes). Every entry expires `ttl_s` seconds after its last write: that TTL is the
    size bound (a sample's entry is a few KiB; Redis can also evict them under
    `maxmemory-policy volatile-ttl`, since every entry has a TTL).
    """

    def __init__(self, client: redis.Redis, model_id: str, ttl_s: int = PATH_CACHE_TTL_S):
        if not model_id or ":" in model_id:
            raise ValueError(f"model_id: must be non-empty and contain no ':' ({model_id!r})")
        if ttl_s <= 0:
            raise ValueError(f"ttl_s: must be positive, not {ttl_s}")
        self.redis = client
        self.model_id = model_id
        self.ttl_s = int(ttl_s)
        self.prefix = f"{KEY_ROOT}:pathcache:{model_id}:"

    def key(self, version: str, entry: object) -> str:
        """The Redis key of one entry; `entry` is any JSON-serializable key part."""
        canonical = json.dumps(entry, sort_keys=True, separators=(",", ":"))
        digest = hashlib.sha256(canonical.encode("utf-8")).hexdigest()
        return f"{self.prefix}{version}:{digest}"

    def get_many(self, keys: list[str]) -> list[bytes | None]:
        """The stored values of `keys` (None where absent), in order; one round trip."""
        if not keys:
            return []
        return list(self.redis.mget(keys))

    def put_many(self, values: Mapping[str, bytes]) -> None:
        """Store each key's value with the TTL; one round trip."""
        if not values:
            return
        pipe = self.redis.pipeline(transaction=False)
        for key, value in values.items():
            pipe.set(key, value, ex=self.ttl_s)
        pipe.execute()

    def wipe(self) -> int:
        """Delete every entry of this model (all versions); returns how many."""
        deleted = 0
        batch: list[bytes] = []
        for key in self.redis.scan_iter(match=self.prefix + "*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                deleted += int(self.redis.delete(*batch))
                batch = []
        if batch:
            deleted += int(self.redis.delete(*batch))
        return deleted
