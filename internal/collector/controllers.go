package collector

import "github.com/flux-exporter/flux_exporter/internal/controllers"

func init() {
	register("controllers", true, func(d Deps) (Collector, error) {
		var fluxVersion func() string
		if d.Flux != nil {
			fluxVersion = d.Flux.FluxVersion
		}
		return controllers.New(controllers.Options{State: d.Controllers, FluxVersion: fluxVersion,
			Timeout: d.ControllersTimeout, Logger: d.logger()}), nil
	})
}
