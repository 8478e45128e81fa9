#include "rpc_fuzz.h"

#include <capnp/dynamic.h>
#include <capnp/rpc.capnp.h>
#include <capnp/serialize-async.h>
#include <capnp/serialize.h>
#include <fmt/format.h>
#include <kj/debug.h>
#include <leveldb/helpers/memenv.h>
#include <stdlib.h>

#include <filesystem>
#include <functional>

#include "certs.h"
#include "chunkserver.h"
#include "test_disks.h"
#include "master.h"
#include "rpc.h"

namespace cairn::fuzz {
namespace {

constexpr kj::Duration ANSWER_WITHIN = 10 * kj::SECONDS;

// No network at all: what the services dial (copy sources, chain members) is refused, so
// that no fuzzed address is ever reached.
class NoNetwork final : public kj::Network {
 public:
  kj::Promise<kj::Own<kj::NetworkAddress>> parseAddress(kj::StringPtr addr, uint) override {
    return KJ_EXCEPTION(DISCONNECTED, "no network in the fuzz harness", addr);
  }
  kj::Own<kj::NetworkAddress> getSockaddr(const void*, uint) override {
    KJ_FAIL_REQUIRE("no network in the fuzz harness");
  }
  kj::Own<kj::Network> restrictPeers(kj::ArrayPtr<const kj::StringPtr>,
                                     kj::ArrayPtr<const kj::StringPtr>) override {
    KJ_FAIL_REQUIRE("no network in the fuzz harness");
  }
};

constexpr uint64_t INTERESTING[] = {0,
                                    1,
                                    2,
                                    3,
                                    7,
                                    255,
                                    256,
                                    4095,
                                    4096,
                                    65535,
                                    65536,
                                    1 << 20,
                                    (1 << 22) + 1,
                                    1 << 26,
                                    0x7fffffff,
                                    0x80000000,
                                    0xffffffff,
                                    uint64_t{1} << 32,
                                    uint64_t{1} << 46,
                                    uint64_t{1} << 63,
                                    ~uint64_t{0}};

// Fills every field of `b` (some left unset) with values drawn from `c`.
void fill(capnp::DynamicStruct::Builder b, Choices& c, int depth) {
  for (auto field : b.getSchema().getFields()) {
    if (c.below(5) == 0) continue;
    auto type = field.getType();
    KJ_IF_MAYBE (e, kj::runCatchingExceptions([&]() {
                   using T = capnp::schema::Type;
                   uint64_t n = c.number();
                   switch (type.which()) {
                     case T::BOOL:
                       b.set(field, (n & 1) != 0);
                       break;
                     case T::INT8:
                       b.set(field, static_cast<int8_t>(n));
                       break;
                     case T::INT16:
                       b.set(field, static_cast<int16_t>(n));
                       break;
                     case T::INT32:
                       b.set(field, static_cast<int32_t>(n));
                       break;
                     case T::INT64:
                       b.set(field, static_cast<int64_t>(n));
                       break;
                     case T::UINT8:
                       b.set(field, static_cast<uint8_t>(n));
                       break;
                     case T::UINT16:
                       b.set(field, static_cast<uint16_t>(n));
                       break;
                     case T::UINT32:
                       b.set(field, static_cast<uint32_t>(n));
                       break;
                     case T::UINT64:
                       b.set(field, n);
                       break;
                     case T::FLOAT32:
                       b.set(field, static_cast<float>(static_cast<int64_t>(n)));
                       break;
                     case T::FLOAT64:
                       b.set(field, static_cast<double>(static_cast<int64_t>(n)) / 7);
                       break;
                     case T::TEXT: {
                       std::string s = c.text(c.below(8) == 0 ? 5000 : 300);
                       b.set(field, capnp::Text::Reader(s.c_str(), s.size()));
                       break;
                     }
                     case T::DATA: {
                       std::string s = c.text(c.below(8) == 0 ? (5 << 20) : 4096);
                       b.set(field, capnp::Data::Reader(
                                        reinterpret_cast<const capnp::byte*>(s.data()), s.size()));
                       break;
                     }
                     case T::ENUM:
                       b.set(field,
                             capnp::DynamicEnum(type.asEnum(), static_cast<uint16_t>(c.below(40))));
                       break;
                     case T::STRUCT:
                       if (depth < 3) fill(b.init(field).as<capnp::DynamicStruct>(), c, depth + 1);
                       break;
                     case T::LIST: {
                       uint32_t size =
                           static_cast<uint32_t>(c.below(8) == 0 ? c.below(5000) : c.below(6));
                       auto list = b.init(field, size).as<capnp::DynamicList>();
                       auto element = type.asList().getElementType();
                       for (uint32_t i = 0; i < size && i < 64; ++i) {
                         if (element.isStruct()) {
                           if (depth < 3) fill(list[i].as<capnp::DynamicStruct>(), c, depth + 1);
                         } else if (element.isText()) {
                           std::string s = c.text(64);
                           list.set(i, capnp::Text::Reader(s.c_str(), s.size()));
                         } else if (element.isUInt64()) {
                           list.set(i, c.number());
                         } else if (element.isUInt32()) {
                           list.set(i, static_cast<uint32_t>(c.number()));
                         }
                       }
                       break;
                     }
                     default:  // void, interfaces and AnyPointer: no capabilities are sent
                       break;
                   }
                 })) {
      (void)e;  // a value this field cannot hold: left as it is
    }
  }
}

// Spoils a serialized message the way a broken or hostile peer would.
void spoil(std::string& bytes, Choices& c) {
  switch (c.below(6)) {
    case 0:  // flipped bytes
      for (uint64_t k = 0, n = 1 + c.below(8); k < n && !bytes.empty(); ++k) {
        bytes[c.below(bytes.size())] ^= static_cast<char>(1 + c.below(255));
      }
      break;
    case 1:  // truncated
      bytes.resize(c.below(bytes.size() + 1));
      break;
    case 2:  // a segment table that claims far more than follows
      if (bytes.size() >= 8) {
        uint32_t words = static_cast<uint32_t>(c.number());
        memcpy(&bytes[4], &words, 4);
      }
      break;
    case 3:  // many segments
      if (bytes.size() >= 4) {
        uint32_t count = static_cast<uint32_t>(c.number());
        memcpy(&bytes[0], &count, 4);
      }
      break;
    case 4:  // noise appended
      bytes += c.text(512);
      break;
    default:  // noise instead
      bytes = c.text(2048);
      break;
  }
}

std::string flat(capnp::MessageBuilder& m) {
  auto words = capnp::messageToFlatArray(m);
  auto bytes = words.asBytes();
  return std::string(reinterpret_cast<const char*>(bytes.begin()), bytes.size());
}

}  // namespace

uint64_t Choices::raw() {
  if (!fromBytes) return rng();
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | (at < size ? data[at++] : 0);
  return v;
}

uint64_t Choices::below(uint64_t n) {
  if (n == 0) return 0;
  if (fromBytes && n <= 256) return at < size ? data[at++] % n : 0;
  return raw() % n;
}

uint64_t Choices::number() {
  switch (below(4)) {
    case 0:
      return INTERESTING[below(sizeof(INTERESTING) / sizeof(INTERESTING[0]))];
    case 1:
      return below(16);  // inodes, handles and versions that exist
    case 2:
      return INTERESTING[below(sizeof(INTERESTING) / sizeof(INTERESTING[0]))] - 1;
    default:
      return raw();
  }
}

std::string Choices::text(size_t max) {
  static const char* const WORDS[] = {
      "",       ".",           "..",     "/",        "a/b",
      "d",      "f",           "secret", "k",        "user.cairn.replication",
      "user.x", "127.0.0.1:1", "::",     "\xff\xfe", "trash"};
  if (below(3) == 0) return WORDS[below(sizeof(WORDS) / sizeof(WORDS[0]))];
  size_t n = below(max + 1);
  std::string s(n, '\0');
  if (fromBytes) {
    for (auto& ch : s) ch = static_cast<char>(below(256));
  } else {
    for (size_t i = 0; i < n; i += 8) {
      uint64_t v = rng();
      memcpy(&s[i], &v, std::min<size_t>(8, n - i));
    }
  }
  return s;
}

// One event loop per thread, shared by every harness of the process.
kj::AsyncIoContext& sharedIo() {
  static kj::AsyncIoContext* io = new kj::AsyncIoContext(kj::setupAsyncIo());
  return *io;
}

struct Harness::Parts {
  kj::AsyncIoContext& io = sharedIo();
  std::unique_ptr<leveldb::Env> env{leveldb::NewMemEnv(leveldb::Env::Default())};
  std::unique_ptr<Master> master;
  MemDisk disk{uint64_t{4} << 30};
  NoNetwork network;
  std::unique_ptr<Chunkserver> chunkserver;
  std::string tlsDir;
  std::shared_ptr<TlsCredentials> tls;
};

Harness::Harness() : parts(std::make_unique<Parts>()) {
  auto& p = *parts;
  MasterOptions o;
  o.dataDir = "/fuzz";
  o.metaEnv = p.env.get();
  o.chunkSize = 1 << 20;
  p.master =
      std::make_unique<Master>(o, p.io.provider->getTimer(), kj::systemPreciseCalendarClock());
  auto& ns = p.master->names();
  auto wait = [&](kj::Promise<MutationResult> m) { KJ_ASSERT(m.wait(p.io.waitScope).status.ok()); };
  wait(ns.mkdir(ROOT_INODE, "d", 0755, 0, 0));
  wait(ns.mkdir(ROOT_INODE, "secret", 0700, 0, 0));
  auto d = ns.lookup(ROOT_INODE, "d");
  wait(ns.create(d.value.inode, "f", 0644, 0, 0, 0, true));
  ChunkserverOptions co;
  co.address = "127.0.0.1:1";
  co.dataDirs = {"/data"};
  co.master = "127.0.0.1:2";
  p.chunkserver = std::make_unique<Chunkserver>(co, p.disk, p.io.provider->getTimer(), p.network);
  KJ_ASSERT(p.chunkserver->store().open().ok());
  for (uint64_t h = 1; h <= 3; ++h) {
    KJ_ASSERT(p.chunkserver->store().create(h, 1).ok());
    KJ_ASSERT(
        p.chunkserver->store().write(h, 1, 0, std::string(70000, static_cast<char>('a' + h))).ok());
  }
  // A certificate for the TLS side of handshake().
  char tmpl[] = "/tmp/cairn-fuzz-XXXXXX";
  KJ_ASSERT(mkdtemp(tmpl) != nullptr);
  p.tlsDir = tmpl;
  KJ_ASSERT(initCa(p.tlsDir + "/ca", 1).ok());
  CertRequest r;
  r.identity.role = Role::MASTER;
  r.identity.name = "master";
  r.hosts = {"127.0.0.1"};
  KJ_ASSERT(issueCert(p.tlsDir + "/ca", r, p.tlsDir + "/master").ok());
  auto tls = TlsCredentials::load(p.tlsDir + "/master");
  KJ_ASSERT(tls.ok());
  p.tls = std::shared_ptr<TlsCredentials>(std::move(tls.value));
}

Harness::~Harness() {
  std::error_code ec;
  std::filesystem::remove_all(parts->tlsDir, ec);
}

std::string Harness::state() {
  auto& ns = parts->master->names();
  std::string out;
  std::function<void(uint64_t, const std::string&)> walk = [&](uint64_t dir,
                                                               const std::string& path) {
    std::vector<Namespace::Entry> entries;
    bool more = false;
    KJ_ASSERT(ns.readdir(dir, "", 100000, entries, more).ok());
    for (auto& e : entries) {
      const Inode& n = e.inode;
      out += fmt::format("{}/{} {} {:o} {}:{} {} {} {} {}\n", path, e.name, n.inode, n.mode, n.uid,
                         n.gid, n.size, n.nlink, n.mtimeNs, n.replication);
      if (n.type == InodeType::DIRECTORY) walk(n.inode, path + "/" + e.name);
    }
  };
  auto root = ns.getattr(ROOT_INODE);
  out += fmt::format("/ {:o} {}:{} {}\n", root.value.mode, root.value.uid, root.value.gid,
                     root.value.mtimeNs);
  walk(ROOT_INODE, "");
  for (auto& t : ns.listTrash(100000)) out += fmt::format("trash {} {}\n", t.path, t.inode);
  out += fmt::format("chunkservers {}\n", parts->master->chunkManager().servers().size());
  for (auto& c : parts->chunkserver->store().list()) {
    std::string data;
    Status s = parts->chunkserver->store().read(c.handle, c.version, 0, 1 << 20, data);
    out += fmt::format("chunk {} v{} {} bytes {} crc {}\n", c.handle, c.version, c.length,
                       s.toString(), std::hash<std::string>()(data));
  }
  return out;
}

void Harness::session(Service service, const Identity& peer, Choices& c) {
  auto& p = *parts;
  auto& ws = p.io.waitScope;
  auto& timer = p.io.provider->getTimer();
  auto pipe = kj::newTwoWayPipe();
  capnp::Capability::Client bootstrap =
      service == Service::MASTER ? capnp::Capability::Client(p.master->bootstrap(peer))
                                 : capnp::Capability::Client(p.chunkserver->capabilityFor(peer));
  auto network = kj::heap<capnp::TwoPartyVatNetwork>(
      *pipe.ends[0], capnp::rpc::twoparty::Side::SERVER, RPC_READER_OPTIONS);
  auto rpc = kj::heap(capnp::makeRpcServer(*network, kj::mv(bootstrap)));
  auto disconnected = network->onDisconnect().fork();

  // Answers are read as they come (the pipe holds nothing), and counted.
  auto& client = *pipe.ends[1];
  uint32_t returns = 0;
  std::function<kj::Promise<void>()> drain = [&]() -> kj::Promise<void> {
    return capnp::tryReadMessage(client, RPC_READER_OPTIONS)
        .then([&](kj::Maybe<kj::Own<capnp::MessageReader>> m) -> kj::Promise<void> {
          KJ_IF_MAYBE (message, m) {
            if ((*message)->getRoot<capnp::rpc::Message>().isReturn()) ++returns;
            return drain();
          }
          return kj::READY_NOW;
        });
  };
  auto draining = drain().eagerlyEvaluate([](kj::Exception&&) {});

  // Questions: 0 the bootstrap; for the master, 1 its client() or chunkserver() service.
  uint32_t questions = 0;
  capnp::InterfaceSchema iface;
  // Sends one message; false once the service has ended the connection (as it does on
  // a message it cannot read). A message it neither reads nor refuses in time is a hang.
  auto send = [&](capnp::MessageBuilder& m, bool spoiled) -> bool {
    std::string bytes = flat(m);
    if (spoiled) spoil(bytes, c);
    auto written = client.write(bytes.data(), bytes.size()).then([]() { return true; });
    auto gone = disconnected.addBranch().then([]() { return false; },
                                              [](kj::Exception&&) { return false; });
    bool hung = false;
    bool sent = timer.timeoutAfter(ANSWER_WITHIN, written.exclusiveJoin(kj::mv(gone)))
                    .then([](bool ok) { return ok; },
                          [&hung](kj::Exception&& e) {
                            hung = e.getType() == kj::Exception::Type::OVERLOADED;
                            return false;
                          })
                    .wait(ws);
    KJ_REQUIRE(!hung, "a message was neither read nor refused in time (a hang)");
    return sent;
  };
  {
    capnp::MallocMessageBuilder m;
    m.initRoot<capnp::rpc::Message>().initBootstrap().setQuestionId(questions++);
    send(m, false);
  }
  uint32_t serviceQuestion = 0;
  if (service == Service::MASTER) {
    bool registry = c.below(4) == 0;
    capnp::MallocMessageBuilder m;
    auto call = m.initRoot<capnp::rpc::Message>().initCall();
    call.setQuestionId(serviceQuestion = questions++);
    call.initTarget().initPromisedAnswer().setQuestionId(0);
    call.setInterfaceId(capnp::typeId<wire::Master>());
    call.setMethodId(registry ? 1 : 0);
    call.initParams().initContent();
    send(m, false);
    iface = registry ? capnp::Schema::from<wire::ChunkserverRegistry>()
                     : capnp::Schema::from<wire::ClientService>();
  } else {
    iface = capnp::Schema::from<wire::ChunkServer>();
  }
  auto methods = iface.getMethods();

  // Well-formed calls with drawn arguments, each answered in time.
  uint64_t calls = 4 + c.below(40);
  bool alive = true;
  for (uint64_t k = 0; k < calls && alive && !c.exhausted(); ++k) {
    capnp::MallocMessageBuilder m;
    auto call = m.initRoot<capnp::rpc::Message>().initCall();
    call.setQuestionId(questions++);
    auto target = call.initTarget().initPromisedAnswer();
    target.setQuestionId(serviceQuestion);
    if (service == Service::MASTER) target.initTransform(1)[0].setGetPointerField(0);
    call.setInterfaceId(iface.getProto().getId());
    uint16_t method = static_cast<uint16_t>(c.below(methods.size() + 1));
    call.setMethodId(method);
    auto params = call.initParams().initContent();
    if (method < methods.size()) {
      fill(params.initAs<capnp::DynamicStruct>(methods[method].getParamType()), c, 0);
    }
    alive = send(m, false);
  }
  if (alive) {
    std::function<kj::Promise<void>()> answered = [&]() -> kj::Promise<void> {
      if (returns >= questions) return kj::READY_NOW;
      return timer.afterDelay(5 * kj::MILLISECONDS).then([&]() { return answered(); });
    };
    auto ended = disconnected.addBranch().then([]() {}, [](kj::Exception&&) {});
    bool ok = timer.timeoutAfter(ANSWER_WITHIN, answered().exclusiveJoin(kj::mv(ended)))
                  .then([]() { return true; }, [](kj::Exception&&) { return false; })
                  .wait(ws);
    KJ_REQUIRE(ok, "calls were not answered in time (a hang)", returns, questions);
  }
  // Then broken messages, and the end of the connection.
  uint64_t broken = c.below(6);
  for (uint64_t k = 0; k < broken && alive; ++k) {
    capnp::MallocMessageBuilder m;
    auto call = m.initRoot<capnp::rpc::Message>().initCall();
    call.setQuestionId(questions++);
    call.initTarget().setImportedCap(static_cast<uint32_t>(c.below(4)));
    call.setInterfaceId(c.below(2) ? iface.getProto().getId() : c.number());
    call.setMethodId(static_cast<uint16_t>(c.number()));
    auto params = call.initParams().initContent();
    if (!methods.size()) continue;
    fill(params.initAs<capnp::DynamicStruct>(methods[c.below(methods.size())].getParamType()), c,
         0);
    alive = send(m, true);
  }
  client.shutdownWrite();
  bool ended =
      timer.timeoutAfter(ANSWER_WITHIN, disconnected.addBranch())
          .then([]() { return true; },
                [](kj::Exception&& e) { return e.getType() != kj::Exception::Type::OVERLOADED; })
          .wait(ws);
  KJ_REQUIRE(ended, "the connection did not end after its peer stopped (a hang)");
  rpc = nullptr;
  network = nullptr;
  // Let what the session started (group commits, deletions) finish.
  timer.afterDelay(1 * kj::MILLISECONDS).wait(ws);
}

void Harness::handshake(Choices& c) {
  auto& p = *parts;
  auto& ws = p.io.waitScope;
  auto& timer = p.io.provider->getTimer();
  auto pipe = kj::newTwoWayPipe();
  auto accepted =
      p.tls->accept(kj::mv(pipe.ends[0]), timer, 200 * kj::MILLISECONDS)
          .then([](SecureStream) { return true; }, [](kj::Exception&&) { return false; });
  std::string bytes;
  if (c.below(2) == 0) {
    bytes = c.text(4096);
  } else {
    // A TLS record header for a handshake, then junk of the length it claims, or less.
    uint16_t length = static_cast<uint16_t>(c.number());
    bytes = std::string("\x16\x03\x01", 3) + static_cast<char>(length >> 8) +
            static_cast<char>(length & 0xff);
    bytes += c.text(length);
  }
  kj::runCatchingExceptions([&]() { pipe.ends[1]->write(bytes.data(), bytes.size()).wait(ws); });
  if (c.below(2) == 0) pipe.ends[1]->shutdownWrite();
  // Either it fails or the timeout cuts it off: it never succeeds, and never hangs.
  KJ_REQUIRE(!accepted.wait(ws), "a handshake of noise succeeded");
}

void fuzzOneInput(Service service, const uint8_t* data, size_t size) {
  static Harness* unprivileged = new Harness();
  static Harness* privileged = new Harness();
  static const std::string before = unprivileged->state();
  if (size == 0) return;
  Choices choices(data + 1, size - 1);
  if (data[0] % 2 == 0) {
    unprivileged->session(service, unprivilegedUser(), choices);
    if (unprivileged->state() != before) abort();  // a peer without rights changed something
  } else {
    privileged->session(service, peerFor(service, choices), choices);
  }
}

Identity unprivilegedUser() { return Identity{Role::USER, "mallory", 4242, {4242}, false, true}; }

Identity peerFor(Service service, Choices& c) {
  switch (c.below(4)) {
    case 0:
      return unprivilegedUser();
    case 1:
      return Identity{Role::ADMIN, "admin", 0, {0}, false, true};
    case 2:
      return Identity{service == Service::MASTER ? Role::MOUNT : Role::CHUNKSERVER,
                      "peer",
                      NOBODY,
                      {},
                      true,
                      true};
    default:
      return Identity{};  // --insecure: trusted
  }
}

}  // namespace cairn::fuzz
