// The parts of amazon-chime-sdk-js the join page uses, re-exported as one ES module (web/vendor/amazon-chime-sdk.js).
export {
  ConsoleLogger,
  DefaultDeviceController,
  DefaultMeetingSession,
  LogLevel,
  MeetingSessionConfiguration,
  MeetingSessionStatusCode,
} from 'amazon-chime-sdk-js';
