export { WsAuthClient, RpcError } from "./client.js";
export type {
  WsAuthClientOptions,
  BackoffOptions,
  RpcOptions,
  WebSocketLike,
  WebSocketConstructor,
} from "./client.js";
export { Machine, backoffDelay, hintForClose } from "./machine.js";
export type {
  Action,
  Input,
  MachineOptions,
  State,
  Events,
  MessageEvent,
  GapEvent,
  ExpiringEvent,
  ErrorEvent,
  ClosedEvent,
  SessionEvent,
  Failure,
} from "./machine.js";
