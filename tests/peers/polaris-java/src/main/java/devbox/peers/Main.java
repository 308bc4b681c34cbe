package devbox.peers;

import com.tencent.polaris.api.core.ConsumerAPI;
import com.tencent.polaris.api.core.ProviderAPI;
import com.tencent.polaris.api.pojo.Instance;
import com.tencent.polaris.api.pojo.RouteArgument;
import com.tencent.polaris.api.pojo.SourceService;
import com.tencent.polaris.api.rpc.GetAllInstancesRequest;
import com.tencent.polaris.api.rpc.GetInstancesRequest;
import com.tencent.polaris.api.rpc.GetOneInstanceRequest;
import com.tencent.polaris.api.rpc.InstanceDeregisterRequest;
import com.tencent.polaris.api.rpc.InstanceHeartbeatRequest;
import com.tencent.polaris.api.rpc.InstanceRegisterRequest;
import com.tencent.polaris.api.rpc.InstanceRegisterResponse;
import com.tencent.polaris.client.api.SDKContext;
import com.tencent.polaris.factory.ConfigAPIFactory;
import com.tencent.polaris.factory.api.DiscoveryAPIFactory;
import com.tencent.polaris.factory.config.ConfigurationImpl;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Collections;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeSet;
import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicReference;
import java.util.function.Supplier;

/**
 * Drives the real polaris-java SDK against one Polaris gRPC address (devbox's, in the tests), as an
 * application would: a provider registers an instance with a TTL and heartbeats it; a consumer
 * discovers the service until the instance is seen healthy, picks one instance, picks again with
 * caller arguments (so the service's routing rule decides), then the provider deregisters and the
 * consumer waits until the instance is gone. Each step prints one JSON line on stdout; a step that
 * cannot succeed before its deadline prints {"step":"error",...} and the probe exits 1.
 *
 * <p>Arguments: {@code --addr HOST:PORT --service NAME --port N [--namespace default] [--expect N]
 * [--wait SECONDS] [--route-key env] [--route-values a,b] [--workdir DIR] [--hold 1]}. With
 * {@code --hold}, the probe prints {"step":"hold"} before deregistering and waits for a line on stdin.
 */
public final class Main {

    private static final String HOST = "127.0.0.1";
    private static final int TTL_SECONDS = 2;
    private static final int PICKS_PER_VALUE = 30;

    private final Map<String, String> opts;
    private final String namespace;
    private final String service;
    private final int port;
    private final long waitMillis;

    private Main(Map<String, String> opts) {
        this.opts = opts;
        this.namespace = opts.getOrDefault("namespace", "default");
        this.service = opts.getOrDefault("service", "java-provider");
        this.port = Integer.parseInt(opts.getOrDefault("port", "18080"));
        this.waitMillis = (long) (Double.parseDouble(opts.getOrDefault("wait", "30")) * 1000);
    }

    public static void main(String[] args) {
        Map<String, String> opts = new HashMap<>();
        for (int i = 0; i + 1 < args.length; i += 2) {
            opts.put(args[i].replaceFirst("^--?", ""), args[i + 1]);
        }
        if (!opts.containsKey("addr")) {
            System.err.println("usage: Main --addr HOST:PORT [--service S --port N ...]");
            System.exit(2);
        }
        int code;
        try {
            code = new Main(opts).run();
        } catch (Throwable e) {
            emit("error", "message", String.valueOf(e));
            e.printStackTrace();
            code = 1;
        }
        System.out.flush();
        // The SDK leaves non-daemon threads (gRPC, its schedulers) behind even after destroy().
        Runtime.getRuntime().halt(code);
    }

    private ConfigurationImpl configuration() {
        ConfigurationImpl cfg = (ConfigurationImpl) ConfigAPIFactory.createConfigurationByAddress(opts.get("addr"));
        // No Prometheus push/pull of the SDK's own metrics: devbox is not that backend.
        cfg.getGlobal().getStatReporter().setEnable(false);
        // The SDK's defaults (1 s per API call, 1 s per message) assume a warm JVM and an idle
        // server; a cold JVM's first gRPC calls on a loaded 2-core test machine take longer.
        cfg.getGlobal().getAPI().setTimeout(10_000);
        cfg.getGlobal().getServerConnector().setConnectTimeout(5_000L);
        cfg.getGlobal().getServerConnector().setMessageTimeout(5_000L);
        // The SDK persists each service it fetched (default: $HOME/polaris/backup) and would load
        // it back on the next run; keep that inside the run's directory.
        Path workdir = Path.of(opts.getOrDefault("workdir", "."));
        cfg.getConsumer().getLocalCache().setPersistDir(workdir.resolve("polaris-backup").toString());
        return cfg;
    }

    private int run() throws InterruptedException, java.io.IOException {
        ConfigurationImpl cfg = configuration();
        SDKContext context = SDKContext.initContextByConfig(cfg);
        ProviderAPI provider = DiscoveryAPIFactory.createProviderAPIByContext(context);
        ConsumerAPI consumer = DiscoveryAPIFactory.createConsumerAPIByContext(context);
        ScheduledExecutorService beats = Executors.newSingleThreadScheduledExecutor(r -> {
            Thread t = new Thread(r, "probe-heartbeat");
            t.setDaemon(true);
            return t;
        });
        try {
            InstanceRegisterRequest reg = new InstanceRegisterRequest();
            reg.setNamespace(namespace);
            reg.setService(service);
            reg.setHost(HOST);
            reg.setPort(port);
            reg.setTtl(TTL_SECONDS);
            reg.setProtocol("http");
            reg.setVersion("1.0.0");
            reg.setMetadata(Collections.singletonMap("env", "java"));
            InstanceRegisterResponse registered = provider.registerInstance(reg);
            emit("register", "instance_id", registered.getInstanceId(), "exists", registered.isExists());

            // Heartbeats as the application sends them: once a second, TTL 2 s.
            AtomicInteger beatsOk = new AtomicInteger();
            AtomicReference<String> beatError = new AtomicReference<>();
            beats.scheduleAtFixedRate(() -> {
                InstanceHeartbeatRequest hb = new InstanceHeartbeatRequest();
                hb.setNamespace(namespace);
                hb.setService(service);
                hb.setHost(HOST);
                hb.setPort(port);
                try {
                    provider.heartbeat(hb);
                    beatsOk.incrementAndGet();
                } catch (RuntimeException e) {
                    beatError.set(String.valueOf(e));
                }
            }, 0, 1, TimeUnit.SECONDS);

            int expect = Integer.parseInt(opts.getOrDefault("expect", "1"));
            String self = HOST + ":" + port;
            List<Instance> all = until("discover", () -> {
                GetAllInstancesRequest req = new GetAllInstancesRequest();
                req.setNamespace(namespace);
                req.setService(service);
                List<Instance> got = List.of(consumer.getAllInstances(req).getInstances());
                long healthy = got.stream().filter(Instance::isHealthy).count();
                boolean selfHealthy = got.stream().anyMatch(i -> addr(i).equals(self) && i.isHealthy());
                // A heartbeat-checked instance is unhealthy until its first heartbeat (as in Polaris).
                if (healthy < expect || !selfHealthy) {
                    throw new IllegalStateException("getAllInstances: " + healthy + " healthy of " + got.size()
                            + ", want " + expect + " with " + self + " among them (heartbeat error: "
                            + beatError.get() + ")");
                }
                return got;
            });
            if (all == null) {
                return 1;
            }
            List<String> addrs = new ArrayList<>();
            for (Instance i : all) {
                addrs.add(addr(i));
            }
            Collections.sort(addrs);
            Instance mine = all.stream().filter(i -> addr(i).equals(self)).findFirst().orElseThrow();
            emit("discover", "all", addrs, "healthy", all.stream().filter(Instance::isHealthy).count(),
                    "self", Map.of("id", mine.getId(), "healthy", mine.isHealthy(), "weight", mine.getWeight(),
                            "protocol", String.valueOf(mine.getProtocol()),
                            "version", String.valueOf(mine.getVersion()), "metadata", mine.getMetadata()),
                    "heartbeats", beatsOk.get());

            // getInstances runs the router chain (no caller arguments) and returns what it keeps.
            GetInstancesRequest routedAll = new GetInstancesRequest();
            routedAll.setNamespace(namespace);
            routedAll.setService(service);
            List<String> kept = new ArrayList<>();
            for (Instance i : consumer.getInstances(routedAll).getInstances()) {
                kept.add(addr(i));
            }
            Collections.sort(kept);
            GetOneInstanceRequest oneReq = new GetOneInstanceRequest();
            oneReq.setNamespace(namespace);
            oneReq.setService(service);
            emit("one", "instances", kept, "one", addr(consumer.getOneInstance(oneReq).getInstance()));

            String routeValues = opts.getOrDefault("route-values", "");
            if (!routeValues.isEmpty()) {
                String key = opts.getOrDefault("route-key", "env");
                Map<String, List<String>> routed = new java.util.TreeMap<>();
                for (String value : routeValues.split(",")) {
                    TreeSet<String> seen = new TreeSet<>();
                    for (int n = 0; n < PICKS_PER_VALUE; n++) {
                        GetOneInstanceRequest req = new GetOneInstanceRequest();
                        req.setNamespace(namespace);
                        req.setService(service);
                        SourceService caller = new SourceService();
                        caller.setNamespace(namespace);
                        caller.setService(opts.getOrDefault("caller", "java-caller"));
                        caller.appendArguments(RouteArgument.buildCustom(key, value));
                        req.setServiceInfo(caller);
                        seen.add(addr(consumer.getOneInstance(req).getInstance()));
                    }
                    routed.put(value, new ArrayList<>(seen));
                }
                emit("routed", "key", key, "routed", routed);
            }

            if (opts.containsKey("hold")) {
                // The test looks at devbox's registry while the instance is registered and
                // heartbeating, then writes a line to let the probe deregister.
                emit("hold", "heartbeats", beatsOk.get());
                new java.io.BufferedReader(new java.io.InputStreamReader(System.in)).readLine();
            }
            beats.shutdownNow();
            InstanceDeregisterRequest dereg = new InstanceDeregisterRequest();
            dereg.setNamespace(namespace);
            dereg.setService(service);
            dereg.setHost(HOST);
            dereg.setPort(port);
            provider.deRegister(dereg);
            emit("deregister", "result", "ok", "heartbeats", beatsOk.get(), "heartbeat_error", beatError.get());

            // The consumer's cache follows the server: the instance leaves discovery.
            List<String> after = until("gone", () -> {
                GetAllInstancesRequest req = new GetAllInstancesRequest();
                req.setNamespace(namespace);
                req.setService(service);
                List<String> left = new ArrayList<>();
                for (Instance i : consumer.getAllInstances(req).getInstances()) {
                    left.add(addr(i));
                }
                if (left.contains(self)) {
                    throw new IllegalStateException(self + " still discovered after deregister");
                }
                Collections.sort(left);
                return left;
            });
            if (after == null) {
                return 1;
            }
            emit("gone", "all", after);
            return 0;
        } finally {
            beats.shutdownNow();
            context.destroy();
        }
    }

    /** Retries {@code attempt} every 200 ms until it returns or the wait runs out (then emits the last error). */
    private <T> T until(String step, Supplier<T> attempt) throws InterruptedException {
        long deadline = System.currentTimeMillis() + waitMillis;
        String last = "never tried";
        while (System.currentTimeMillis() < deadline) {
            try {
                return attempt.get();
            } catch (RuntimeException e) {
                last = String.valueOf(e);
            }
            Thread.sleep(200);
        }
        emit("error", "step", step, "message", "not within " + waitMillis + " ms: " + last);
        return null;
    }

    private static String addr(Instance i) {
        return i.getHost() + ":" + i.getPort();
    }

    /** Prints one JSON object: {"step": step, key1: value1, ...}. */
    private static void emit(String step, Object... kv) {
        StringBuilder sb = new StringBuilder("{\"step\":").append(json(step));
        for (int i = 0; i + 1 < kv.length; i += 2) {
            sb.append(',').append(json(kv[i])).append(':').append(json(kv[i + 1]));
        }
        System.out.println(sb.append('}'));
        System.out.flush();
    }

    private static String json(Object v) {
        if (v == null) {
            return "null";
        }
        if (v instanceof Number || v instanceof Boolean) {
            return v.toString();
        }
        if (v instanceof Map<?, ?> m) {
            StringBuilder sb = new StringBuilder("{");
            for (Map.Entry<?, ?> e : new java.util.TreeMap<>(m).entrySet()) {
                sb.append(sb.length() > 1 ? "," : "").append(json(String.valueOf(e.getKey()))).append(':')
                        .append(json(e.getValue()));
            }
            return sb.append('}').toString();
        }
        if (v instanceof Iterable<?> it) {
            StringBuilder sb = new StringBuilder("[");
            for (Object o : it) {
                sb.append(sb.length() > 1 ? "," : "").append(json(o));
            }
            return sb.append(']').toString();
        }
        StringBuilder sb = new StringBuilder("\"");
        for (char c : v.toString().toCharArray()) {
            switch (c) {
                case '"' -> sb.append("\\\"");
                case '\\' -> sb.append("\\\\");
                case '\n' -> sb.append("\\n");
                case '\r' -> sb.append("\\r");
                case '\t' -> sb.append("\\t");
                default -> {
                    if (c < 0x20) {
                        sb.append(String.format("\\u%04x", (int) c));
                    } else {
                        sb.append(c);
                    }
                }
            }
        }
        return sb.append('"').toString();
    }
}
