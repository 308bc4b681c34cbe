// Command polarisprobe drives the real polaris-go SDK against a Polaris server (devbox in the
// tests): a provider registers with a TTL (the SDK then heartbeats on its own), a consumer asks
// GetOneInstance and GetInstances until the provider is seen healthy, then it deregisters.
// It prints one JSON line with what it saw; any failure exits non-zero with the reason.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/polarismesh/polaris-go"
	"github.com/polarismesh/polaris-go/pkg/config"
	"github.com/polarismesh/polaris-go/pkg/model"
)

type result struct {
	InstanceID string   `json:"instance_id"`
	One        string   `json:"one"`
	All        []string `json:"all"`
	Healthy    int      `json:"healthy"`
	Deregister string   `json:"deregister"`
	// Routed maps each -route-values value to the addresses GetOneInstance picked for it.
	Routed map[string][]string `json:"routed,omitempty"`
}

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
	os.Exit(1)
}

func main() {
	addr := flag.String("addr", "127.0.0.1:8091", "polaris gRPC address")
	namespace := flag.String("namespace", "default", "namespace")
	service := flag.String("service", "go-provider", "service to register and discover")
	port := flag.Int("port", 18080, "port to register")
	expect := flag.Int("expect", 1, "instances GetInstances must return")
	wait := flag.Duration("wait", 30*time.Second, "how long to wait for discovery")
	system := flag.Bool("system", false, "find the server through the Polaris system services")
	routeKey := flag.String("route-key", "env", "caller metadata key for -route-values")
	routeValues := flag.String("route-values", "", "comma-separated values: pick 30 times with each as caller metadata")
	flag.Parse()

	cfg := config.NewDefaultConfiguration([]string{*addr})
	cfg.GetGlobal().GetStatReporter().SetEnable(false)
	if *system {
		// The SDK then asks Discover for Polaris/polaris.discover (and .healthcheck) and uses the
		// addresses the server answers for every later call.
		cfg.GetGlobal().GetSystem().GetDiscoverCluster().SetNamespace("Polaris")
		cfg.GetGlobal().GetSystem().GetDiscoverCluster().SetService("polaris.discover")
		cfg.GetGlobal().GetSystem().GetHealthCheckCluster().SetNamespace("Polaris")
		cfg.GetGlobal().GetSystem().GetHealthCheckCluster().SetService("polaris.healthcheck")
	}
	provider, err := polaris.NewProviderAPIByConfig(cfg)
	if err != nil {
		fail("provider: %v", err)
	}
	defer provider.Destroy()
	consumer := polaris.NewConsumerAPIByContext(provider.SDKContext())

	ttl := 1
	reg := &polaris.InstanceRegisterRequest{}
	reg.Service = *service
	reg.Namespace = *namespace
	reg.Host = "127.0.0.1"
	reg.Port = *port
	reg.TTL = &ttl
	reg.Metadata = map[string]string{"env": "go"}
	resp, err := provider.RegisterInstance(reg)
	if err != nil {
		fail("register: %v", err)
	}
	out := result{InstanceID: resp.InstanceID}

	deadline := time.Now().Add(*wait)
	var lastErr error
	for time.Now().Before(deadline) {
		one := &polaris.GetOneInstanceRequest{}
		one.Namespace = *namespace
		one.Service = *service
		got, err := consumer.GetOneInstance(one)
		if err != nil {
			lastErr = err
			time.Sleep(200 * time.Millisecond)
			continue
		}
		all := &polaris.GetInstancesRequest{}
		all.Namespace = *namespace
		all.Service = *service
		many, err := consumer.GetInstances(all)
		if err != nil {
			lastErr = err
			time.Sleep(200 * time.Millisecond)
			continue
		}
		insts := many.GetInstances()
		inst := got.GetInstance()
		out.One = fmt.Sprintf("%s:%d", inst.GetHost(), inst.GetPort())
		out.All = nil
		out.Healthy = 0
		for _, i := range insts {
			out.All = append(out.All, fmt.Sprintf("%s:%d", i.GetHost(), i.GetPort()))
			if i.IsHealthy() {
				out.Healthy++
			}
		}
		sort.Strings(out.All)
		// Registered instances are unhealthy until their first heartbeat (Polaris behaviour):
		// wait until the SDK's heartbeats have made every expected instance healthy.
		if out.Healthy < *expect {
			lastErr = fmt.Errorf("GetInstances returned %d healthy of %d, want %d healthy", out.Healthy, len(insts), *expect)
			time.Sleep(200 * time.Millisecond)
			continue
		}
		lastErr = nil
		break
	}
	if lastErr != nil {
		fail("discovery did not succeed within %v: %v", *wait, lastErr)
	}
	if *routeValues != "" {
		out.Routed = map[string][]string{}
		for _, value := range strings.Split(*routeValues, ",") {
			seen := map[string]bool{}
			for i := 0; i < 30; i++ {
				one := &polaris.GetOneInstanceRequest{}
				one.Namespace = *namespace
				one.Service = *service
				one.SourceService = &model.ServiceInfo{Metadata: map[string]string{*routeKey: value}}
				got, err := consumer.GetOneInstance(one)
				if err != nil {
					fail("routed GetOneInstance for %s=%s: %v", *routeKey, value, err)
				}
				inst := got.GetInstance()
				seen[fmt.Sprintf("%s:%d", inst.GetHost(), inst.GetPort())] = true
			}
			for addr := range seen {
				out.Routed[value] = append(out.Routed[value], addr)
			}
			sort.Strings(out.Routed[value])
		}
	}
	// Let a few heartbeats go by so the server has seen them.
	time.Sleep(1500 * time.Millisecond)
	dereg := &polaris.InstanceDeRegisterRequest{}
	dereg.Service = *service
	dereg.Namespace = *namespace
	dereg.Host = "127.0.0.1"
	dereg.Port = *port
	if err := provider.Deregister(dereg); err != nil {
		fail("deregister: %v", err)
	}
	out.Deregister = "ok"
	line, _ := json.Marshal(out)
	fmt.Println(string(line))
}
