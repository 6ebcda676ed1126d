/** The bus: NATS connection, subjects, typed errors, nats-server launcher. The only module importing nats. */
export { Bus } from './connection.ts';
export { CHUNK_HEADER } from './intake.ts';
export {
  type BusOptions,
  type Meta,
  type MessageLimits,
  DEFAULT_MESSAGE_LIMITS,
  type BusMsg,
  type Handler,
  type SubscribeOptions,
  type BusSubscription,
  type BusEvents,
  type RejectedReport,
} from './types.ts';
export {
  CHAOS_ENV,
  MESSAGE_FAULTS,
  FaultLayer,
  subjectMatches,
  parseFaultRule,
  type FaultRule,
  type FaultReport,
  type MessageFault,
} from './faults.ts';
export { subjects, checkToken, checkDevice, COORDINATOR, InvalidSubjectToken, type Subjects } from './subjects.ts';
export {
  BusError,
  BusTimeout,
  NoResponders,
  PayloadTooLarge,
  ConnectionClosed,
  ConnectFailed,
  BusFailure,
  MessageRejected,
} from './errors.ts';
export {
  startNatsServer,
  findNatsServer,
  freePort,
  NatsServerError,
  reloadAuthorization,
  processAlive,
  DEFAULT_MAX_PAYLOAD,
  NATS_SERVER_MISSING,
  type NatsServer,
  type NatsServerOptions,
} from './server.ts';
export { newUserKey, publicKeyOf, seedAuthenticator } from './keys.ts';
